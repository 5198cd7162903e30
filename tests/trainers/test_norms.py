"""Norm placement: Pre-LN, Post-LN and Admin (profiled and closed-form omega)."""

from __future__ import annotations

import itertools
import math

import pytest
import torch

from trainers.model import Encoder, ModelConfig, admin_closed_form

pytestmark = pytest.mark.numeric  # run again under other CPU code paths by `make test`


def encoder(norm: str, depth: int = 4, admin_init: str = "profile", seed: int = 0) -> Encoder:
    """Xavier-scale init (std 1/sqrt(width)), Admin's setting: every branch adds O(1) variance."""
    torch.manual_seed(seed)
    config = ModelConfig(depth=depth, width=32, heads=4, norm=norm, admin_init=admin_init,  # type: ignore[arg-type]
                         init_std=32**-0.5)
    return Encoder(config, vocab_size=50, seq_len=8, n_classes=5, readout="all")


def tokens(n: int = 64) -> torch.Tensor:
    return torch.randint(0, 50, (n, 8), generator=torch.Generator().manual_seed(3))


def test_admin_profile_omegas_start_at_one_and_never_decrease_with_depth() -> None:
    model = encoder("admin", depth=12)
    omegas = model.admin_profile(tokens())
    assert len(omegas) == 24  # two residual sublayers per block
    assert omegas[0] == pytest.approx(1.0, abs=1e-5)  # the first sum adds f to the raw embedding itself
    assert all(later >= earlier - 1e-6 for earlier, later in itertools.pairwise(omegas))
    assert omegas[-1] > omegas[1] + 0.5  # the running variance keeps accumulating through 24 sublayers
    for block in model.blocks:  # the parameters hold the profiled values, one value per sublayer vector
        for omega in (block.omega_attn.detach(), block.omega_mlp.detach()):
            assert bool((omega == omega[0]).all())


def test_admin_profile_omega_is_the_running_variance_of_the_sums() -> None:
    """Recompute omega_2 and omega_3 by hand: 1 + Var(f_j) / Var(x_{j-1}) accumulated over earlier sublayers."""
    model = encoder("admin", depth=2)
    x = tokens()
    omegas = model.admin_profile(x)
    block = model.blocks[0]
    with torch.no_grad():
        emb = model.embed(x)
        f1 = block.attn(emb)
        x1 = block.ln_attn(emb + f1)  # omega_1 = 1
        running = 1 + float(f1.var()) / float(emb.var())
        f2 = block.mlp(x1)
        x2_running = running + float(f2.var()) / float(x1.var())
    assert omegas[1] == pytest.approx(math.sqrt(running), rel=1e-4)
    assert omegas[2] == pytest.approx(math.sqrt(x2_running), rel=1e-4)


def test_admin_closed_form_matches_the_formula_and_fills_every_omega() -> None:
    for n in (2, 4, 12, 48):
        assert admin_closed_form(n) == pytest.approx(math.sqrt((n + 1) / math.log(n + 1) - 1))
    assert admin_closed_form(4) == pytest.approx(1.45144, abs=1e-4)
    model = encoder("admin", depth=3, admin_init="closed_form")
    expected = admin_closed_form(6)
    for block in model.blocks:
        torch.testing.assert_close(block.omega_attn.data, torch.full((32,), expected))
        torch.testing.assert_close(block.omega_mlp.data, torch.full((32,), expected))


def test_admin_with_unit_omega_is_post_ln_and_differs_from_pre_ln() -> None:
    post, admin, pre = encoder("post_ln"), encoder("admin"), encoder("pre_ln")
    admin.load_state_dict({**post.state_dict(), **{k: v for k, v in admin.state_dict().items() if "omega" in k}})
    pre.load_state_dict({k: v for k, v in post.state_dict().items()}, strict=False)
    x = tokens()
    torch.testing.assert_close(admin(x), post(x))
    assert not torch.allclose(pre(x), post(x), atol=1e-3)
    admin.admin_profile(x)
    assert not torch.allclose(admin(x), post(x), atol=1e-3)


def test_admin_profile_needs_admin_norm() -> None:
    with pytest.raises(ValueError, match=r"model\.norm 'admin'"):
        encoder("post_ln").admin_profile(tokens())


def test_unknown_norm_names_the_key_and_the_choices() -> None:
    with pytest.raises(ValueError, match=r"model\.norm.*allowed: pre_ln, post_ln, admin"):
        encoder("rms_ln")
