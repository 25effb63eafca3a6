/* tests.h: every test function, one line each (registered in test_main.c). */
#ifndef LLAMAC_TESTS_TESTS_H
#define LLAMAC_TESTS_TESTS_H

#include <stdint.h>

#include "../model/quant.h"

void ops_embed(void);
void ops_rmsnorm(void);
void ops_matmul(void);
void ops_rope(void);
void ops_attn(void);
void ops_attn_decode(void);
void ops_swiglu(void);
void ops_lmhead_ce(void);
void ops_add(void);
void ops_sumsq(void);
void ops_scale(void);
void ops_adamw(void);
void ops_lora(void);
void ops_lmhead_rows(void);
void ops_matmul_rows(void);
void ops_attn_paged(void);
void ops_rows(void);
void ops_qmatmul(void);
void ops_qembed(void);
void ops_qlmhead(void);
void ops_qmatmul_rows(void);
void ops_qdequant(void);
void ops_lmhead_kd(void);
/* test_kd.c: test_ops.c's row for lmhead_kd; the op against torchtune and
 * TRL (tests/fixtures/kd/kd_ref.bin, or LLAMAC_KD_REF: scripts/test_kd_ref.py);
 * its time per call beside lmhead_ce (printed); head_bench: lmhead_rows
 * at SmolLM2's head with 3% of the rows trained (printed) */
void ops_kd_case(Rng *r);
void kd_ref(void);
void kd_bench(void);
void head_bench(void);
void attn_branch_bench(void);
/* test_rlalgo.c: the RL arithmetic (train/loop/rlalgo.h): hand fixtures, finite
 * differences, parse errors, and TRL's values (tests/fixtures/rl/rl_ref.json, or
 * LLAMAC_RL_REF: scripts/test_rl_ref.py) */
void rlalgo_parse(void);
void rlalgo_grpo_adv(void);
void rlalgo_rloo_adv(void);
void rlalgo_whiten(void);
void rlalgo_gae(void);
void rlalgo_ppo_rewards(void);
void rlalgo_row_weight(void);
void rlalgo_fd(void);
void rlalgo_trl(void);
/* The types a weight can stay in (test_ops.c), and a random (rows, cols)
 * tensor of one: random codes, moderate finite scales (*q points into the
 * returned buffer; caller frees it). */
#define TEST_NQTYPES 9
extern const uint32_t test_qtypes[TEST_NQTYPES];
uint8_t *test_qtensor_rand(Rng *r, uint32_t type, int rows, int cols, QTensor *q);
void engine_forced(void);
void engine_lora(void);
void engine_batch_invariant(void);
void engine_greedy(void);
void engine_session(void);
void ops_attn_blocks(void);
void ops_attn_kernels(void);
void ops_deterministic(void);
void model_gradcheck_untied(void);
void model_gradcheck_tied_gqa_docs(void);
void model_gradcheck_head_dim(void);
void prune_same_shape(void);
void prune_zero_removed(void);
void prune_formats(void);
void prune_importances_direct(void);
void prune_cli(void);
void prune_cli_text(void);
void model_gradcheck_score(void);
void model_layer_ranges(void);
void model_doc_pos(void);
void model_overfit(void);
void model_kv_cache(void);
void model_param_counts(void);
void model_batch_errors(void);
void model_lora_gradcheck_untied(void);
void model_lora_gradcheck_tied_gqa(void);
void model_recompute(void);
void model_lora_decode(void);
void model_lora_errors(void);
void lora_table(void);
void lora_parse(void);
void lora_validate_errors(void);
void lora_scale_values(void);
void lora_init_stats(void);
void lora_merge_values(void);
void lora_keep_rate(void);
void lora_memory_rss(void);
void lora_merge_model(void);
void optim_sched_values(void);
void optim_sched_cap(void);
void optim_adamw_values(void);
void optim_clip(void);
void optim_accumulation(void);
void optim_errors(void);
void ref_llama2(void);
void ref_llama3(void);
void ref_llama_hd(void);
void ref_fixture_errors(void);
void ref_lora_llama2(void);
void ref_lora_llama3(void);
void bpe_roundtrip_random(void);
void bpe_roundtrip_unicode(void);
void bpe_empty(void);
void bpe_known_merges(void);
void bpe_save_load(void);
void bpe_bad_files(void);
void bpe_v1_fixture(void);
void bpe_bad_files_v2(void);
void bpe_speed(void);
void tok_reference(void);
void tok_ids(void);
void tok_llamac(void);
void tok_utf8(void);
void tok_bad_files(void);
void tok_cli(void);
void chat_llama3(void);
void chat_llama2(void);
void chat_errors(void);
void chat_chatml(void);
void chat_llama31(void);
void chat_detect(void);
void chat_cli(void);
void chat_cli_chatml(void);
void tok_spm(void);
void tok_pipeline(void);
void tok_chat_reference(void);
void spm_tiny(void);
void spm_ref_llama(void);
void spm_ref_plain(void);
void spm_ref_unused(void);
void spm_ref_raw(void);
void spm_bad_files(void);
void spm_speed(void);
void shard_roundtrip(void);
void shard_bad_files(void);
void loader_determinism(void);
void loader_ranks_disjoint(void);
void loader_doc_boundaries(void);
void loader_too_short(void);
void mixture_proportions(void);
void mixture_order_independent(void);
void mixture_epochs(void);
void mixture_seek_exact(void);
void mixture_one_source(void);
void mixture_cli_errors(void);
void mixture_resume(void);
void mixture_mpi(void);
void jsonl_bom(void);
void docstream_order(void);
void docstream_errors(void);
void textfilter_gopher(void);
void textfilter_repetition(void);
void textfilter_c4(void);
void textfilter_words(void);
void textfilter_cmd(void);
void data_outputs(void);
void tokstream_serial(void);
void tokstream_shards(void);
void tokstream_cli(void);
void dedup_datatrove_pins(void);
void dedup_minhash_bands(void);
void dedup_cli(void);
void dedup_cli_errors(void);
void qclass_synthetic(void);
void qclass_cli(void);
void pipeline_pretrain(void);
void pipeline_generate(void);
void pipeline_errors(void);
void cli_inspect(void);
void cli_errors(void);
void cli_help_defaults(void);

void ckpt_roundtrip(void);
void ckpt_bad_files(void);
void ckpt_resume_sigkill(void);
void ckpt_resume_sigterm(void);
void ckpt_kill_during_save(void);
void ckpt_cli_errors(void);
void ckpt_lora_roundtrip(void);
void peft_roundtrip(void);
void peft_merge_unmerge(void);
void peft_merged_logits(void);
void peft_bad_config(void);
void peft_bad_weights(void);
void peft_head(void);
void peft_cli(void);
void convert_safetensors_roundtrip(void);
void convert_safetensors_bad(void);
void convert_hf_roundtrip(void);
void convert_hf_config_legacy(void);
void convert_gguf_layout(void);
void convert_cli(void);
void convert_cli_tokenizer(void);
void convert_cli_errors(void);
void convert_classifier(void);
void export_gguf_encodings(void);
void export_gguf_cli(void);
void gguf_dequant(void);
void gguf_model_roundtrip(void);
void gguf_tokenizer(void);
void gguf_vocab_fixture(void);
void gguf_bad_files(void);
void gguf_cli(void);
void nf4_fixture(void);
void nf4_roundtrip(void);
void nf4_partial_group(void);
void nf4_zero_blocks(void);
void export_hf_tokenizer(void);
void quant_rmse(void);
void quant_known(void);
void quant_zero_equal(void);
void quant_rows_independent(void);
void quant_cli(void);
void quant_cli_errors(void);

#ifdef LC_CUDA
/* test_gpu.c: the CUDA backend against the CPU; run only where a GPU is */
int gpu_present(void);
void gpu_ops(void);
void gpu_qops(void); /* the quantised-weight ops, every keepable type */
void gpu_step(void);
void gpu_bench_engine(void); /* times the engine ops (prints, checks nothing) */

#endif

void chat_hf_specials(void);
void cmd_sample_cli(void);
void cmd_sample_batch_invariance(void);
void cmd_sample_resume(void);
void cmd_sample_killed(void);
void cmd_sample_errors(void);
void cmd_sample_mpi(void);
void cmd_sample_stops(void);
void cmd_score_spec(void);
void cmd_score_direct(void);
void cmd_score_batch_invariance(void);
void cmd_score_adapter(void);
void cmd_score_weights(void);
void cmd_score_pairs(void);
void cmd_score_errors(void);
void sft_formats(void);
void sft_packing(void);
void sft_errors(void);
void sft_resume(void);
void sft_lora_resume(void);
void sft_lora_resume_bases(void);
void sft_cli_errors(void);
void sft_dump_batches(void); /* test_sft_batches.c */
void dpo_formats(void);
void dpo_errors(void);
void dpo_losses(void);
void dpo_rows(void);
void dpo_grad(void);
void dpo_full_and_cache(void);
void dpo_accum(void);
void dpo_lora_resume(void);
void dpo_lora_resume_bases(void);
void dpo_cli_errors(void);
/* The key of the first line of a metrics file (JSONL) for step `step` that has it, NAN if none. */
double test_metric(const char *path, int step, const char *key);
void reward_data(void);
void reward_first_step(void);
void reward_train(void);
void reward_lora_resume(void);
void reward_cli_errors(void);
void reward_bad_models(void);
void reward_lora_resume_bases(void);
void reward_score_adapter(void);
void sft_qlora_resume(void);
void qlora_model_types(void);
void qlora_engine(void);
void qlora_memory(void);
void qlora_cli_errors(void);

/* llamac's BPE with Llama 3's special tokens, trained by test_chat.c */
struct Tokenizer;
const char *test_chat_tokenizer(struct Tokenizer *t);

/* helpers shared by the resume tests (test_ckpt.c) */
#include <sys/types.h>

#include "../model/params.h"
/* A model file loaded as every command loads it (source.h): 0 or -1 with e. */
/* The three kinds of model source a user has, made from the checkpoint
 * base_h5 (a run's base) in dir, after removing dir/rb*: bases[0] is base_h5
 * itself, [1] a Hugging Face directory, [2] a GGUF file (llamac convert). */
void ckpt_test_bases(const char *dir, const char *base_h5, char bases[3][256]);
int test_source_load(const char *path, const ParamTable *t, float *params, Err *e);
pid_t ckpt_test_spawn(const char *args, const char *outfile);
int ckpt_test_wait_for(const char *path, pid_t pid);
void ckpt_test_same(const char *pa, const char *pb);
void ckpt_test_same_losses(const char *ma, const char *mb, int steps);
/* Kill and resume (every such test of pretrain, sft and dpo): with
 * straight_args (NULL: the caller ran it), the straight run must succeed;
 * then resumed_args is spawned (its output in the directory of
 * kill_after_ckpt + ".log"), killed with SIGKILL once kill_after_ckpt
 * exists (after a random 0 .. max_delay_us more, when not 0), must not
 * have reached final_b, and `resumed_args --resume auto` must succeed and
 * end with final_b the same bits as the straight run's final_a
 * (ckpt_test_same) and the same losses (metrics_a, metrics_b) for steps
 * steps (ckpt_test_same_losses). */
void ckpt_test_kill_resume(const char *straight_args, const char *resumed_args, const char *kill_after_ckpt,
                           const char *final_a, const char *final_b, const char *metrics_a, const char *metrics_b,
                           int steps, unsigned max_delay_us);
/* test_cli.c: bad command lines. Each case's args (a printf format whose
 * one %s, if any, takes arg) run as `llamac <args><tail>` must exit 1 with
 * one stderr line holding want. */
typedef struct TestCliCase {
    const char *args, *want;
} TestCliCase;
void test_cli_refusals(const TestCliCase *cases, size_t n, const char *arg, const char *tail);

/* test_dist.c: data parallelism under mpirun */
/* 1 if this build has MPI and mpirun is found, else 0 after printing why the
 * caller skips. */
int test_have_mpi(void);
/* `mpirun -np np <llamac> <args>` (printf-style; --oversubscribe, as root
 * too), output in test_out / test_err; the exit status. */
int test_mpi_llamac(int np, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void dist_pretrain_equiv(void);
void dist_one_rank(void);
void dist_sft_equiv(void);
void dist_errors(void);
void dist_save_no_space(void);
void dist_resume_other_size(void);
void dist_rank_killed(void);
void dist_ckpt_layout(void);
void dist_none_refuses(void);
void dist_sigterm(void);
void dist_dpo_equiv(void);
void dist_mfu(void);
void dist_pp_equiv(void);
void dist_pp_sft(void);
void dist_pp_resume(void);
void dist_pp_faults(void);
void dist_pp_errors(void);
void dist_pp_dpo(void);
void dist_reward_equiv(void);
void pp_schedules(void);
void pp_bubble_sim(void);
void pp_split_stages(void);

void robust_ops_elementwise(void);
void robust_ops_attn(void);
void robust_ops_lmhead_lora(void);
void robust_err_quote(void);
void robust_ini_section(void);
void robust_nonfinite_loaders(void);
void fuzz_replay(void);

void sample_truncation(void);
void sample_draw(void);
void sample_greedy(void);
void sample_penalty(void);
void sample_logprob(void);
void sample_streams(void);
void sample_errors(void);
void sample_determinism(void);
void sample_speed(void);

void rs_select(void);
void rs_curve(void);
void rs_sft_data(void);
void rs_errors(void);
void rs_e2e(void);
void rs_lora(void);
void rs_pool(void);
void rs_bases(void);

/* test_rewards.c: the rewards of RL completions (train/loop/rewards.h) */
void rewards_final_answer_cases(void);
void rewards_answer_match_cases(void);
void rewards_builtin(void);
void rewards_errors(void);
void rewards_cmd_ok(void);
void rewards_cmd_errors(void);

/* test_distill.c: llamac distill and teacher-cache */
void distill_ce_equiv(void);
void distill_cache_exact(void);
void distill_cache_topk(void);
void distill_resume(void);
void dist_distill_equiv(void);
void dist_pp_distill(void);
void distill_errors(void);
void distill_teacher_formats(void);

/* test_rs.c: a random tiny model (the "tiny" preset) for the tokenizer of
 * tok_id with vocab V saved at path: a policy, or with num_labels 1 a reward
 * model (pad id 0). */
void test_tiny_model(const char *path, int V, uint64_t tok_id, int num_labels, uint64_t seed);
/* test_rl.c: online RL through the binary */
void rl_grpo_e2e(void);
void rl_fixed_loss(void);
void rl_resume(void);
void rl_kill_resume(void);
void rl_ppo(void);
void rl_dist(void);
void rl_errors(void);
void rl_shared_prompt(void);

#endif
