/*
 * cmd_data_dedup.c: placeholder until the step lands.
 */
#include "cmds.h"

int data_dedup(int argc, char **argv, Err *e) {
    (void)argc, (void)argv;
    return err_set(e, "data dedup: not built yet");
}
