"""A Llama's Hugging Face config.json and tensor shapes from its dimensions,
for the scripts that write random models (test_quant_ref.py, bench_qlora.py).
Standard library only."""


def llama_config(D, F, L, H, KV, V, tied, max_pos, rope_theta):
    """config.json of a float32 LlamaForCausalLM."""
    return {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": D, "intermediate_size": F,
            "num_hidden_layers": L, "num_attention_heads": H, "num_key_value_heads": KV, "vocab_size": V,
            "max_position_embeddings": max_pos, "rms_norm_eps": 1e-5, "rope_theta": rope_theta,
            "tie_word_embeddings": tied, "hidden_act": "silu", "torch_dtype": "float32"}


def llama_shapes(D, F, L, H, KV, V, tied):
    """{HF tensor name: shape}: the embedding, an untied head, the final norm, then each layer's (the order
    the scripts draw random values in)."""
    hs = D // H
    shapes = {"model.embed_tokens.weight": (V, D)}
    if not tied:
        shapes["lm_head.weight"] = (V, D)
    shapes["model.norm.weight"] = (D,)
    for i in range(L):
        p = f"model.layers.{i}."
        shapes.update({p + "self_attn.q_proj.weight": (D, D), p + "self_attn.k_proj.weight": (KV * hs, D),
                       p + "self_attn.v_proj.weight": (KV * hs, D), p + "self_attn.o_proj.weight": (D, D),
                       p + "mlp.gate_proj.weight": (F, D), p + "mlp.up_proj.weight": (F, D),
                       p + "mlp.down_proj.weight": (D, F), p + "input_layernorm.weight": (D,),
                       p + "post_attention_layernorm.weight": (D,)})
    return shapes
