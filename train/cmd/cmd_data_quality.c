/*
 * cmd_data_quality.c: placeholder until the step lands.
 */
#include "cmds.h"

int data_quality_train(int argc, char **argv, Err *e) {
    (void)argc, (void)argv;
    return err_set(e, "data quality-train: not built yet");
}

int data_quality(int argc, char **argv, Err *e) {
    (void)argc, (void)argv;
    return err_set(e, "data quality: not built yet");
}
