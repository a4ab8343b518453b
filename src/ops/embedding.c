/* filled in below */
#include "cpu/cpu.h"
