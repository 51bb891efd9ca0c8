build/obj/src/util/error.o: src/util/error.c include/riffq/error.h \
 include/riffq/buf.h
include/riffq/error.h:
include/riffq/buf.h:
