build/obj/src/util/buf.o: src/util/buf.c include/riffq/buf.h
include/riffq/buf.h:
