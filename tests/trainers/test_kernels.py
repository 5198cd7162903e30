"""Attention kernel math and the encoder's shortcuts, checked against direct formulas."""

from __future__ import annotations

import itertools
import math

import pytest
import torch

from trainers.model import (
    KERNELS,
    Encoder,
    ModelConfig,
    attention_entropy,
    gaussian_kernel,
    heat_scale,
    normsoftmax_kernel,
    softmax_kernel,
    softmax_rows,
    temperature_kernel,
)

pytestmark = pytest.mark.numeric  # run again under other CPU code paths by `make test`

D = 16


def qk(scale: float, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(3, 2, 5, D, generator=g, dtype=torch.float64) * scale  # (B, H, T, D)
    k = torch.randn(3, 2, 5, D, generator=g, dtype=torch.float64) * scale
    return q, k


def test_softmax_rows_matches_torch_softmax() -> None:
    logits = torch.randn(4, 3, 5, 7, dtype=torch.float64) * 30
    torch.testing.assert_close(softmax_rows(logits), logits.softmax(-1))


def test_softmax_kernel_is_scaled_dot_product_and_temperature_sqrt_d_equals_it() -> None:
    q, k = qk(1.0)
    expected = (q @ k.transpose(-2, -1) / math.sqrt(D)).softmax(-1)
    torch.testing.assert_close(softmax_kernel(q, k), expected)
    torch.testing.assert_close(temperature_kernel(q, k, math.sqrt(D)), expected)
    sharper = temperature_kernel(q, k, 1.0)
    assert attention_entropy(sharper) < attention_entropy(expected) - 0.1


def test_normsoftmax_clamps_the_divisor_at_sqrt_d() -> None:
    q, k = qk(3.0)  # large logits: per-row variance far above sqrt(D) = 4
    logits = q @ k.transpose(-2, -1)
    assert float(logits.var(-1).min()) > 2 * math.sqrt(D)
    torch.testing.assert_close(normsoftmax_kernel(q, k, "var"), (logits / math.sqrt(D)).softmax(-1))
    torch.testing.assert_close(normsoftmax_kernel(q, k, "std"), (logits / math.sqrt(D)).softmax(-1))


def test_normsoftmax_divides_small_logits_by_their_own_spread() -> None:
    q, k = qk(0.1)  # small logits: the variance is well below sqrt(D)
    logits = q @ k.transpose(-2, -1)
    var, std = logits.var(-1, keepdim=True, correction=0), logits.std(-1, keepdim=True)  # population var
    assert float(var.max()) < 1.0
    torch.testing.assert_close(normsoftmax_kernel(q, k, "var"), (logits / var).softmax(-1))
    torch.testing.assert_close(normsoftmax_kernel(q, k, "std"), (logits / std).softmax(-1))
    # with std the logits are standardised, so attention is decisive although plain softmax is near-uniform
    uniform = math.log(5)
    assert attention_entropy(softmax_kernel(q, k)) > uniform - 0.01
    assert attention_entropy(normsoftmax_kernel(q, k, "std")) < uniform - 0.2


def test_gaussian_is_softmax_times_a_key_norm_factor_when_row_normalised() -> None:
    q, k = qk(1.0)
    scale = 2 * math.sqrt(D)
    key_factor = (-(k * k).sum(-1) / scale).exp().unsqueeze(-2)  # (B, H, 1, T)
    unnormalised = (q @ k.transpose(-2, -1) * 2 / scale).softmax(-1) * key_factor
    expected = unnormalised / unnormalised.sum(-1, keepdim=True)
    torch.testing.assert_close(gaussian_kernel(q, k, normalize=True), expected)


def test_unnormalised_gaussian_is_the_raw_kernel() -> None:
    q, k = qk(0.5)
    sq = ((q.unsqueeze(-2) - k.unsqueeze(-3)) ** 2).sum(-1)  # (B, H, T, T)
    raw = gaussian_kernel(q, k, normalize=False)
    torch.testing.assert_close(raw, (-sq / (2 * math.sqrt(D))).exp())
    assert float(raw.max()) <= 1.0
    assert float((raw.sum(-1) - 1).abs().max()) > 0.1  # rows are not normalised


def test_heat_scale_is_cosine_annealed_then_held() -> None:
    values = [heat_scale(p / 100, 3.0, 0.125, 0.5) for p in range(101)]
    assert all(a >= b for a, b in itertools.pairwise(values))


def test_heat_kernel_follows_training_progress() -> None:
    config = ModelConfig(depth=1, width=32, heads=2, kernel="heat")
    torch.manual_seed(0)
    model = Encoder(config, vocab_size=10, seq_len=5, n_classes=3, readout="all")
    tokens = torch.randint(0, 10, (8, 5))
    entropies = []
    for progress in (0.0, 0.6):
        model.set_progress(progress)
        model(tokens)
        entropies.append(attention_entropy(model.blocks[0].attn.last_weights))
    # scale 24/sqrt(D) (sharp) at the start, plain softmax's 1/sqrt(D) after the anneal
    assert entropies[0] < entropies[1]


@pytest.mark.parametrize("kernel", KERNELS)
@pytest.mark.parametrize("norm", ["pre_ln", "post_ln", "admin"])
def test_cls_readout_computes_exactly_the_first_row_of_the_full_forward(kernel: str, norm: str) -> None:
    config = ModelConfig(depth=3, width=32, heads=4, kernel=kernel, norm=norm)
    torch.manual_seed(0)
    cls_model = Encoder(config, vocab_size=20, seq_len=6, n_classes=4, readout="cls")
    full_model = Encoder(config, vocab_size=20, seq_len=6, n_classes=4, readout="all")
    full_model.load_state_dict(cls_model.state_dict())
    tokens = torch.randint(0, 20, (16, 6))
    torch.testing.assert_close(cls_model(tokens), full_model(tokens)[:, 0], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("kernel", ["softmax", "temperature", "normsoftmax", "heat"])
def test_normalised_kernels_give_rows_that_sum_to_one(kernel: str) -> None:
    config = ModelConfig(depth=1, width=32, heads=2, kernel=kernel)
    torch.manual_seed(1)
    model = Encoder(config, vocab_size=10, seq_len=5, n_classes=3, readout="all")
    model(torch.randint(0, 10, (4, 5)))
    weights = model.blocks[0].attn.last_weights
    torch.testing.assert_close(weights.sum(-1), torch.ones(weights.shape[:-1]))


def test_unknown_kernel_names_the_key_and_the_choices() -> None:
    with pytest.raises(ValueError, match=r"model\.kernel.*allowed: softmax, temperature"):
        Encoder(ModelConfig(kernel="cosine"), vocab_size=4, seq_len=3, n_classes=2)  # type: ignore[arg-type]
