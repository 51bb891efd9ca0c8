build/obj/src/util/log.o: src/util/log.c include/riffq/log.h
include/riffq/log.h:
