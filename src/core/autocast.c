/* autocast scope: written in this change. */
#include "internal.h"
