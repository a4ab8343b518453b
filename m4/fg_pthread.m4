# AX_PTHREAD_LITE: add -pthread when the compiler accepts it (Check and the
# thread-local error state need it). A small stand-in for ax_pthread.
AC_DEFUN([AX_PTHREAD_LITE], [
  AC_CACHE_CHECK([whether $CC accepts -pthread], [fg_cv_pthread], [
    fg_save_CFLAGS=$CFLAGS
    CFLAGS="$CFLAGS -pthread"
    AC_LINK_IFELSE([AC_LANG_PROGRAM([[#include <pthread.h>]], [[pthread_self();]])],
                   [fg_cv_pthread=yes], [fg_cv_pthread=no])
    CFLAGS=$fg_save_CFLAGS])
  AS_IF([test "x$fg_cv_pthread" = xyes], [PTHREAD_CFLAGS=-pthread; PTHREAD_LIBS=-pthread])
  AC_SUBST([PTHREAD_CFLAGS])
  AC_SUBST([PTHREAD_LIBS])
])
