/*
 * cmd_data_filter.c: placeholder until the step lands.
 */
#include "cmds.h"

int data_filter(int argc, char **argv, Err *e) {
    (void)argc, (void)argv;
    return err_set(e, "data filter: not built yet");
}
