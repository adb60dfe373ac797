"""SEDL's temporal model: a causal pre-LN transformer over per-frame embeddings.

`TemporalPredictor(E[:, :T])` returns, at every position t, a prediction of the
next embedding E(t+1) made from E(1..t) only (causal mask), and the hidden
context vector at t that the behaviour stage reads as "temporal context".
The prediction's output head (`output`):
  * `mixture` (default): an attention-weighted average of the past embeddings
    themselves, weights softmax(-rate * age + q.k) with a learned recency rate
    and q, k from the context, plus a learned update;
  * `residual`: E(t) plus a learned update.
Both are re-normalised to unit length.
"""

from __future__ import annotations

import flax.linen as nn
import jax.numpy as jnp
import numpy as np

POSITIONAL = ("learned", "sinusoidal")
OUTPUTS = ("mixture", "residual")


def sinusoidal_positions(length: int, width: int) -> np.ndarray:
  """The fixed sin/cos table of Vaswani et al. [length, width]."""
  pos = np.arange(length)[:, None]
  i = np.arange(0, width, 2)[None]
  angle = pos / np.power(10000.0, i / width)
  table = np.zeros((length, width), np.float32)
  table[:, 0::2] = np.sin(angle)
  table[:, 1::2] = np.cos(angle)[:, : width // 2]
  return table


class Block(nn.Module):
  """Pre-LN: x + MHA(LN(x)) with a causal mask, then x + MLP(LN(x))."""

  heads: int
  dropout: float

  @nn.compact
  def __call__(self, x, mask, train: bool):
    width = x.shape[-1]
    h = nn.LayerNorm(name="ln_attn")(x)
    h = nn.MultiHeadDotProductAttention(num_heads=self.heads, dropout_rate=self.dropout,
                                        deterministic=not train, name="attn")(h, h, mask=mask)
    x = x + nn.Dropout(self.dropout, deterministic=not train)(h)
    h = nn.LayerNorm(name="ln_mlp")(x)
    h = nn.Dense(4 * width, name="mlp_in")(h)
    h = nn.Dense(width, name="mlp_out")(nn.gelu(h))
    return x + nn.Dropout(self.dropout, deterministic=not train)(h)


class TemporalPredictor(nn.Module):
  """Embeddings [B, T, D] -> (next-embedding predictions [B, T, D], unit norm;
  context [B, T, width])."""

  layers: int
  heads: int
  width: int
  dropout: float
  context_length: int
  positional: str = "learned"
  output: str = "mixture"

  @nn.compact
  def __call__(self, emb, train: bool = False):
    b, t, d = emb.shape
    if t > self.context_length:
      raise ValueError(f"sequence length {t} exceeds temporal.context_length={self.context_length}")
    if self.positional not in POSITIONAL:
      raise ValueError(f"temporal.positional={self.positional!r}: expected one of {POSITIONAL}")
    x = nn.Dense(self.width, name="embed")(emb)
    if self.positional == "learned":
      pos = self.param("pos", nn.initializers.normal(0.02), (self.context_length, self.width))
    else:
      pos = jnp.asarray(sinusoidal_positions(self.context_length, self.width))
    x = x + pos[:t]
    x = nn.Dropout(self.dropout, deterministic=not train)(x)
    mask = nn.make_causal_mask(jnp.ones((b, t), jnp.int32))
    for i in range(self.layers):
      x = Block(self.heads, self.dropout, name=f"block{i}")(x, mask, train)
    context = nn.LayerNorm(name="ln_out")(x)
    if self.output not in OUTPUTS:
      raise ValueError(f"temporal.output={self.output!r}: expected one of {OUTPUTS}")
    # Start from the current frame (consecutive face embeddings are close): the
    # update is zero-initialised, so training begins at persistence.
    delta = nn.Dense(d, kernel_init=nn.initializers.zeros, name="predict")(context)
    if self.output == "residual":
      base = emb
    else:
      base = self._mixture(emb, context)
    pred = base + delta
    pred = pred / jnp.maximum(jnp.linalg.norm(pred, axis=-1, keepdims=True), 1e-6)
    return pred, context


  def _mixture(self, emb, context):
    """A causal attention-weighted average of the past embeddings themselves.

    Weights are softmax(-rate * age + q(t).k(s)): a learned recency decay (it
    starts steep, i.e. at persistence) plus content matching from the
    context (zero-initialised). Averaging recent frames removes per-frame
    noise that a free-form update over few training sequences learns to
    memorise instead (README: temporal model).
    """
    t = emb.shape[1]
    # The decay starts at 1 (the previous frame weighs e^-1 of the current one).
    # Adam moves a parameter by about lr per step and the decay must be free to
    # move by O(1) in a few hundred steps, hence the factor 10.
    raw = self.param("recency", nn.initializers.zeros, ())
    rate = nn.softplus(np.log(np.expm1(1.0)) + 10.0 * raw)
    age = jnp.arange(t)[:, None] - jnp.arange(t)[None, :]  # [t, s], >= 0 on the causal side
    q = nn.Dense(32, kernel_init=nn.initializers.zeros, name="mix_query")(context)
    k = nn.Dense(32, name="mix_key")(context)
    logits = -rate * age + jnp.einsum("btc,bsc->bts", q, k) / np.sqrt(32.0)
    logits = jnp.where(age >= 0, logits, -1e9)
    weights = nn.softmax(logits, axis=-1)
    return jnp.einsum("bts,bsd->btd", weights, emb)


def build(cfg) -> TemporalPredictor:
  return TemporalPredictor(layers=int(cfg.layers), heads=int(cfg.heads), width=int(cfg.width),
                           dropout=float(cfg.dropout), context_length=int(cfg.context_length),
                           positional=cfg.positional, output=cfg.get("output", "mixture"))
