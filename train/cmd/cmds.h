/*
 * cmds.h: the subcommands of llamac. Each takes the words after its name and
 * returns a process exit code; user errors are printed by main from the Err.
 */
#ifndef LLAMAC_TRAIN_CMDS_H
#define LLAMAC_TRAIN_CMDS_H

#include "../../model/base.h"

/* Returns 0 on success, -1 with e set on a user error. */
int cmd_inspect(int argc, char **argv, Err *e);
int cmd_bench(int argc, char **argv, Err *e);
int cmd_tokenize(int argc, char **argv, Err *e);
int cmd_data(int argc, char **argv, Err *e);
/* llamac data's steps (cmd_data.c's table), one file each */
int data_filter(int argc, char **argv, Err *e);
int data_dedup(int argc, char **argv, Err *e);
int data_quality_train(int argc, char **argv, Err *e);
int data_quality(int argc, char **argv, Err *e);
int cmd_pretrain(int argc, char **argv, Err *e);
int cmd_sft(int argc, char **argv, Err *e);
int cmd_dpo(int argc, char **argv, Err *e);
int cmd_reward(int argc, char **argv, Err *e);
int cmd_distill(int argc, char **argv, Err *e);
int cmd_teacher_cache(int argc, char **argv, Err *e);
int cmd_eval(int argc, char **argv, Err *e);
int cmd_generate(int argc, char **argv, Err *e);
int cmd_convert(int argc, char **argv, Err *e);
int cmd_quantize(int argc, char **argv, Err *e);
int cmd_logits(int argc, char **argv, Err *e);
int cmd_chat(int argc, char **argv, Err *e);
int cmd_sample(int argc, char **argv, Err *e);
int cmd_score(int argc, char **argv, Err *e);
int cmd_rl(int argc, char **argv, Err *e);
int cmd_rs(int argc, char **argv, Err *e);
int cmd_prune(int argc, char **argv, Err *e);

#endif
