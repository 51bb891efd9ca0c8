build/obj/src/wire/wire.o: src/wire/wire.c include/riffq/wire.h \
 include/riffq/buf.h include/riffq/error.h
include/riffq/wire.h:
include/riffq/buf.h:
include/riffq/error.h:
