/* tools/load/main.c — cqrsd-load, the loader's own binary: `cqrsd load ARGS`
 * runs it with the same arguments (core/main.c). */
#include "tools/load/load.h"

int main(int argc, char **argv)
{
    argv[0] = "load";
    return load_main(argc, argv);
}
