/* tests.h: every test function, one line each (registered in test_main.c). */
#ifndef LLAMAC_TESTS_TESTS_H
#define LLAMAC_TESTS_TESTS_H

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
void ops_attn_blocks(void);
void ops_deterministic(void);
void model_gradcheck_untied(void);
void model_gradcheck_tied_gqa_docs(void);
void model_layer_ranges(void);
void model_doc_pos(void);
void model_overfit(void);
void model_kv_cache(void);
void model_param_counts(void);
void model_batch_errors(void);
void optim_sched_values(void);
void optim_sched_cap(void);
void optim_adamw_values(void);
void optim_clip(void);
void optim_accumulation(void);
void optim_errors(void);
void ref_llama2(void);
void ref_llama3(void);
void ref_fixture_errors(void);
void shard_roundtrip(void);
void shard_bad_files(void);
void loader_determinism(void);
void loader_ranks_disjoint(void);
void loader_doc_boundaries(void);
void loader_too_short(void);
void pipeline_pretrain(void);
void pipeline_generate(void);
void pipeline_errors(void);
void cli_inspect(void);
void cli_errors(void);

#endif
