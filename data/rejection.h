/*
 * rejection.h: the parts of rejection-sampling fine-tuning (`llamac rs`;
 * Llama 2, arXiv 2307.09288 §3.2.3) that need no model: which of a
 * prompt's K samples is kept, the reward curve of the best and the median
 * of the first k samples (the paper's Figure 7, "max vs median reward
 * among N samples"), and the SFT example a kept sample becomes.
 *
 * Rewards are doubles, prompt i's samples at r[i * K + j] in sample order
 * j = 0..K-1 (the order the seeds give them, never the order they finished
 * in), so the selection and the curve are functions of the samples alone.
 * NaN marks a sample that was not scored (an empty completion, which
 * neither a reward model nor SFT takes): it is never kept and is left out
 * of the curve.
 */
#ifndef LLAMAC_DATA_REJECTION_H
#define LLAMAC_DATA_REJECTION_H

#include <stddef.h>

struct json_t;

/* The sample to keep of r[0..K): the largest reward, the first (lowest
 * index) on ties, as Python's max() and numpy's argmax pick, NaN never; -1
 * when it is below threshold (-INFINITY: keep every prompt's best) or
 * every reward is NaN. */
int rejection_best(const double *r, int K, double threshold);

/* The sample counts of the curve: 1, 2, 4, ... while below K, then K
 * itself (K = 6: 1 2 4 6), into ks[0..); returns how many (at most 32). */
#define REJECTION_MAX_KS 32
int rejection_ks(int K, int ks[REJECTION_MAX_KS]);

/* For each c < nk: best[c] (median[c]) = the mean over the prompts of the
 * largest (the median of) each prompt's rewards among its first ks[c],
 * r[i * K + 0 .. ks[c]), NaN left out; the median of an even count is the
 * mean of its two middle values (numpy's). count[c] (may be NULL) = the
 * prompts that had a reward among their first ks[c]; with none best[c] and
 * median[c] are NaN. ks[c] in [1, K]. */
void rejection_curve(const double *r, size_t n, int K, const int *ks, int nk, double *best, double *median,
                     size_t *count);

/* The prompt of a prompts.h line object (new reference): "messages"'s
 * list, or "prompt"'s value (a string or a message list); NULL for a
 * "prompt_ids" line, whose text the caller decodes. */
struct json_t *rejection_prompt(const struct json_t *obj);

/* The SFT example (data/sft.h) of a kept completion text[0..len) (valid
 * UTF-8) of prompt (rejection_prompt's value, or a string): a message list
 * gives {"messages": prompt's messages + {"role": "assistant", "content":
 * text}} (the "messages" format: only the reply is trained), a string
 * {"prompt": prompt, "completion": text} (the "prompt" format: only the
 * completion is trained). New reference; NULL when prompt is neither or
 * text is not UTF-8. */
struct json_t *rejection_sft_example(const struct json_t *prompt, const char *text, size_t len);

#endif
