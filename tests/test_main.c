/*
 * test_main.c: the test registry and runner. `build/tests` runs all tests,
 * `build/tests PREFIX` those whose name starts with PREFIX. Prints PASS/FAIL
 * per test and ends with "N passed, N failed"; exits 1 on any failure.
 */
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>

#include "../train/proc/blas_env.h"
#include "../model/ops.h"
#include "../model/base.h"
#include "test.h"
#include "tests.h"

int test_failures;
const char *test_llamac_path = "build/llamac";

void test_fail(const char *file, int line, const char *fmt, ...) {
    if (test_failures++ >= 8) return; /* keep output short */
    va_list ap;
    va_start(ap, fmt);
    fprintf(stdout, "    %s:%d: ", file, line);
    vfprintf(stdout, fmt, ap);
    fputc('\n', stdout);
    va_end(ap);
}

char test_out[TEST_OUT_MAX], test_err[TEST_ERR_MAX];

void test_put(const char *path, const char *text) {
    FILE *f = fopen(path, "wb");
    LC_ASSERT(f);
    fputs(text, f);
    fclose(f);
}

char *test_slurp(const char *path) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    size_t cap = 4096, n = 0, k;
    char *s = xmalloc(cap);
    while ((k = fread(s + n, 1, cap - n - 1, f)) > 0) {
        n += k;
        if (cap - n - 1 == 0) s = xrealloc(s, cap *= 2);
    }
    fclose(f);
    s[n] = 0;
    return s;
}

size_t test_words(char *text, size_t cap, const char *const *w, int nw, unsigned long long seed) {
    Rng r;
    rng_seed(&r, seed);
    size_t n = 0;
    while (n + 16 < cap) {
        const char *x = w[rng_u64(&r) % (uint64_t)nw];
        memcpy(text + n, x, strlen(x));
        n += strlen(x);
    }
    return n;
}

static void slurp(const char *path, char *buf, size_t n) {
    FILE *f = fopen(path, "rb");
    size_t k = f ? fread(buf, 1, n - 1, f) : 0;
    buf[k] = 0;
    if (f) fclose(f);
}

int test_llamac(const char *fmt, ...) {
    static char args[16384], cmd[17408];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(args, sizeof args, fmt, ap);
    va_end(ap);
    mkdir("build", 0755);
    snprintf(cmd, sizeof cmd, "%s %s >build/test-llamac.out 2>build/test-llamac.err", test_llamac_path, args);
    int st = system(cmd);
    slurp("build/test-llamac.out", test_out, sizeof test_out);
    slurp("build/test-llamac.err", test_err, sizeof test_err);
    return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
}

#define T(fn) {#fn, fn}
static const struct {
    const char *name;
    void (*fn)(void);
} tests[] = {
    T(ops_embed), T(ops_rmsnorm), T(ops_matmul), T(ops_rope), T(ops_attn), T(ops_attn_decode), T(ops_swiglu),
    T(ops_lmhead_ce), T(ops_add), T(ops_sumsq), T(ops_scale), T(ops_adamw), T(ops_lora), T(ops_lmhead_rows), T(ops_matmul_rows),
    T(ops_attn_paged), T(ops_rows), T(ops_qmatmul), T(ops_qembed), T(ops_qlmhead), T(ops_qmatmul_rows), T(ops_qdequant), T(ops_lmhead_kd), T(kd_ref), T(kd_bench), T(head_bench), T(attn_branch_bench), T(rlalgo_parse), T(rlalgo_grpo_adv), T(rlalgo_rloo_adv), T(rlalgo_whiten), T(rlalgo_gae),
    T(rlalgo_ppo_rewards), T(rlalgo_row_weight), T(rlalgo_fd), T(rlalgo_trl), T(engine_forced), T(engine_lora), T(engine_batch_invariant),
    T(engine_greedy), T(engine_session), T(ops_attn_blocks),
    T(ops_attn_kernels), T(ops_deterministic),
    T(model_gradcheck_untied), T(model_gradcheck_tied_gqa_docs), T(model_gradcheck_head_dim), T(model_gradcheck_score), T(model_layer_ranges),
    T(model_doc_pos), T(model_overfit), T(model_kv_cache), T(model_param_counts), T(model_batch_errors),
    T(model_lora_gradcheck_untied), T(model_lora_gradcheck_tied_gqa), T(model_recompute), T(model_lora_decode),
    T(model_lora_errors),
    T(prune_same_shape), T(prune_zero_removed), T(prune_formats), T(prune_importances_direct), T(prune_cli), T(prune_cli_text),
    T(lora_table), T(lora_parse), T(lora_validate_errors), T(lora_scale_values), T(lora_init_stats),
    T(lora_merge_values), T(lora_keep_rate), T(lora_merge_model), T(lora_memory_rss),
    T(optim_sched_values), T(optim_sched_cap), T(optim_adamw_values), T(optim_clip),
    T(optim_accumulation), T(optim_errors),
    T(ref_llama2), T(ref_llama3), T(ref_llama_hd), T(ref_fixture_errors), T(ref_lora_llama2), T(ref_lora_llama3),
    T(bpe_roundtrip_random), T(bpe_roundtrip_unicode), T(bpe_empty), T(bpe_known_merges),
    T(bpe_save_load), T(bpe_bad_files), T(bpe_v1_fixture), T(bpe_bad_files_v2), T(bpe_speed),
    T(tok_reference), T(tok_ids), T(tok_llamac), T(tok_utf8), T(tok_bad_files), T(tok_cli),
    T(chat_llama3), T(chat_llama2), T(chat_errors), T(chat_chatml), T(chat_llama31), T(chat_detect), T(chat_cli), T(chat_cli_chatml), T(chat_hf_specials),
    T(spm_tiny), T(spm_ref_llama), T(spm_ref_plain), T(spm_ref_unused), T(spm_ref_raw), T(spm_bad_files), T(spm_speed),
    T(tok_spm), T(tok_pipeline), T(tok_chat_reference),
    T(shard_roundtrip), T(shard_bad_files), T(loader_determinism), T(loader_ranks_disjoint),
    T(loader_doc_boundaries), T(loader_too_short), T(jsonl_bom), T(docstream_order), T(docstream_errors),
    T(textfilter_gopher), T(textfilter_repetition), T(textfilter_c4), T(textfilter_words), T(textfilter_cmd), T(data_outputs),
    T(tokstream_serial), T(tokstream_shards), T(tokstream_cli),
    T(dedup_datatrove_pins), T(dedup_minhash_bands), T(dedup_cli), T(dedup_cli_errors), T(qclass_synthetic), T(qclass_cli),
    T(pipeline_pretrain), T(pipeline_generate), T(pipeline_errors),
    T(cmd_sample_stops), T(cmd_sample_cli), T(cmd_sample_batch_invariance), T(cmd_sample_resume), T(cmd_sample_killed),
    T(cmd_sample_errors), T(cmd_sample_mpi),
    T(rl_grpo_e2e), T(rl_fixed_loss), T(rl_resume), T(rl_kill_resume), T(rl_ppo), T(rl_dist), T(rl_errors), T(rl_shared_prompt),
    T(rs_select), T(rs_curve), T(rs_sft_data), T(rs_errors), T(rs_e2e), T(rs_lora), T(rs_pool), T(rs_bases),
    T(rewards_final_answer_cases), T(rewards_answer_match_cases), T(rewards_builtin), T(rewards_errors), T(rewards_cmd_ok),
    T(rewards_cmd_errors),
    T(cmd_score_spec), T(cmd_score_direct), T(cmd_score_batch_invariance), T(cmd_score_adapter), T(cmd_score_weights),
    T(cmd_score_pairs), T(cmd_score_errors),
    T(sft_formats), T(sft_packing), T(sft_errors), T(sft_resume), T(sft_lora_resume), T(sft_lora_resume_bases), T(sft_cli_errors),
    T(sft_dump_batches),
    T(dpo_formats), T(dpo_errors), T(dpo_losses), T(dpo_rows), T(dpo_grad), T(dpo_full_and_cache), T(dpo_accum), T(dpo_lora_resume), T(dpo_lora_resume_bases),
    T(dpo_cli_errors), T(distill_ce_equiv), T(distill_cache_exact), T(distill_cache_topk), T(distill_resume),
    T(distill_errors), T(distill_teacher_formats), T(reward_data), T(reward_first_step), T(reward_train), T(reward_lora_resume),
    T(reward_cli_errors), T(reward_bad_models), T(reward_lora_resume_bases), T(reward_score_adapter),
    T(cli_inspect), T(cli_errors), T(cli_help_defaults),
    T(ckpt_roundtrip), T(ckpt_bad_files), T(ckpt_resume_sigkill), T(ckpt_resume_sigterm),
    T(ckpt_kill_during_save), T(ckpt_cli_errors), T(ckpt_lora_roundtrip),
    T(mixture_proportions), T(mixture_order_independent), T(mixture_epochs), T(mixture_seek_exact),
    T(mixture_one_source), T(mixture_cli_errors), T(mixture_resume), T(mixture_mpi),
    T(peft_roundtrip), T(peft_merge_unmerge), T(peft_merged_logits), T(peft_bad_config), T(peft_bad_weights), T(peft_head), T(peft_cli),
    T(convert_safetensors_roundtrip), T(convert_safetensors_bad), T(convert_hf_roundtrip),
    T(convert_hf_config_legacy), T(convert_gguf_layout), T(convert_cli), T(convert_cli_tokenizer),
    T(convert_cli_errors), T(convert_classifier), T(export_gguf_encodings), T(export_gguf_cli), T(export_hf_tokenizer),
    T(gguf_dequant), T(gguf_model_roundtrip), T(gguf_tokenizer), T(gguf_vocab_fixture), T(gguf_bad_files), T(gguf_cli),
    T(qlora_model_types), T(sft_qlora_resume), T(qlora_engine), T(qlora_memory), T(qlora_cli_errors), T(nf4_fixture), T(nf4_roundtrip), T(nf4_partial_group), T(nf4_zero_blocks),
    T(quant_rmse), T(quant_known), T(quant_zero_equal), T(quant_rows_independent), T(quant_cli), T(quant_cli_errors),
    T(dist_pretrain_equiv), T(dist_one_rank), T(dist_sft_equiv), T(dist_errors), T(dist_save_no_space),
    T(dist_resume_other_size), T(dist_rank_killed), T(dist_ckpt_layout), T(dist_none_refuses), T(dist_sigterm), T(dist_dpo_equiv), T(dist_mfu), T(dist_distill_equiv), T(dist_pp_distill),
    T(pp_schedules), T(pp_bubble_sim), T(pp_split_stages), T(dist_pp_equiv), T(dist_pp_sft), T(dist_pp_resume),
    T(dist_pp_faults), T(dist_pp_errors), T(dist_pp_dpo), T(dist_reward_equiv),
    T(robust_ops_elementwise), T(robust_ops_attn), T(robust_ops_lmhead_lora), T(robust_err_quote), T(robust_ini_section),
    T(robust_nonfinite_loaders), T(fuzz_replay),
    T(sample_truncation), T(sample_draw), T(sample_greedy), T(sample_penalty), T(sample_logprob),
    T(sample_streams), T(sample_errors), T(sample_determinism), T(sample_speed),
};
#undef T

int main(int argc, char **argv) {
    blas_env_fix(argv);
    /* the llamac binary lives beside this one */
    static char path[4096];
    const char *slash = strrchr(argv[0], '/');
    if (slash) {
        snprintf(path, sizeof path, "%.*s/llamac", (int)(slash - argv[0]), argv[0]);
        test_llamac_path = path;
    }
    printf("BLAS: OpenBLAS %s, %d threads\n", blas_env_describe(), ops_cpu_threads());
    int passed = 0, failed = 0;
    for (size_t i = 0; i < sizeof tests / sizeof tests[0]; i++) {
        if (argc > 1 && strncmp(tests[i].name, argv[1], strlen(argv[1])) != 0) continue;
        test_failures = 0;
        double t0 = time_now();
        tests[i].fn();
        double dt = time_now() - t0;
        if (test_failures) {
            printf("FAIL %s (%d failures, %.2fs)\n", tests[i].name, test_failures, dt);
            failed++;
        } else {
            printf("PASS %s (%.2fs)\n", tests[i].name, dt);
            passed++;
        }
        fflush(stdout);
    }
    /* The CUDA rows of the op table are checked against the CPU where a
     * CUDA backend is built and a GPU is present; never counted as passed. */
    int skipped = 0;
#ifndef LC_CUDA
    if (argc <= 1) {
        printf("SKIP ops_cuda_vs_cpu: no CUDA backend in this build\n");
        skipped++;
    }
#else
    static const struct {
        const char *name;
        void (*fn)(void);
    } gpu_tests[] = {{"gpu_ops", gpu_ops}, {"gpu_qops", gpu_qops}, {"gpu_step", gpu_step}, {"gpu_bench_engine", gpu_bench_engine}};
    int have_gpu = gpu_present();
    for (size_t i = 0; i < sizeof gpu_tests / sizeof gpu_tests[0]; i++) {
        if (argc > 1 && strncmp(gpu_tests[i].name, argv[1], strlen(argv[1])) != 0) continue;
        if (!have_gpu) {
            printf("SKIP %s: no CUDA GPU present\n", gpu_tests[i].name);
            skipped++;
            continue;
        }
        test_failures = 0;
        double t0 = time_now();
        gpu_tests[i].fn();
        double dt = time_now() - t0;
        printf("%s %s (%d failures, %.2fs)\n", test_failures ? "FAIL" : "PASS", gpu_tests[i].name, test_failures, dt);
        if (test_failures) failed++;
        else passed++;
        fflush(stdout);
    }
#endif
    if (skipped) printf("%d passed, %d failed, %d skipped\n", passed, failed, skipped);
    else printf("%d passed, %d failed\n", passed, failed);
    return failed ? 1 : 0;
}
