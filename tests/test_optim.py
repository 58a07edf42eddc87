"""Optimizers step for step with torch.optim; clipping with torch.nn.utils."""

import math

import numpy as np
import pytest

import npnn
from npnn import optim

torch = pytest.importorskip("torch")

CONFIGS = [
    ("SGD", dict(lr=0.1)),
    ("SGD", dict(lr=0.1, momentum=0.9)),
    ("SGD", dict(lr=0.1, momentum=0.9, dampening=0.3, weight_decay=0.01)),
    ("SGD", dict(lr=0.1, momentum=0.9, nesterov=True, weight_decay=0.1)),
    ("Adam", dict(lr=0.01)),
    ("Adam", dict(lr=0.01, betas=(0.8, 0.9), eps=1e-6, weight_decay=0.1)),
    ("AdamW", dict(lr=0.01)),
    ("AdamW", dict(lr=0.01, weight_decay=0.3)),
    ("Adagrad", dict(lr=0.1)),
    ("Adagrad", dict(lr=0.1, lr_decay=0.1, weight_decay=0.05, initial_accumulator_value=0.2)),
    ("RMSprop", dict(lr=0.01)),
    ("RMSprop", dict(lr=0.01, momentum=0.9, centered=True, weight_decay=0.01, alpha=0.9)),
]


def _params(rng):
    return [rng.standard_normal((3, 4)), rng.standard_normal(4)]


@pytest.mark.parametrize("name, kwargs", CONFIGS, ids=[f"{n}-{i}" for i, (n, _) in enumerate(CONFIGS)])
def test_optimizer_matches_torch(name, kwargs):
    rng = np.random.default_rng(0)
    ps = _params(rng)
    gs = [np.zeros_like(p) for p in ps]
    ours = getattr(optim, name)(list(zip(ps, gs)), **kwargs)
    tps = [torch.tensor(p.copy(), requires_grad=True) for p in ps]
    theirs = getattr(torch.optim, name)(tps, **kwargs)
    for _ in range(6):
        for g, tp in zip(gs, tps):
            g[...] = rng.standard_normal(g.shape)
            tp.grad = torch.tensor(g.copy())
        ours.step()
        theirs.step()
        for p, tp in zip(ps, tps):
            np.testing.assert_allclose(p, tp.detach().numpy(), rtol=0, atol=1e-12)


@pytest.mark.parametrize("name, kwargs", CONFIGS[1::2], ids=[n for n, _ in CONFIGS[1::2]])
def test_optimizer_state_round_trip_resumes_exactly(name, kwargs):
    def run(steps, split=None):
        rng = np.random.default_rng(1)
        ps = _params(rng)
        gs = [np.zeros_like(p) for p in ps]
        opt = getattr(optim, name)(list(zip(ps, gs)), **kwargs)
        for i in range(steps):
            if i == split:
                state = opt.state_dict()
                opt = getattr(optim, name)(list(zip(ps, gs)), **kwargs)
                opt.load_state_dict(state)
            for g in gs:
                g[...] = rng.standard_normal(g.shape)
            opt.step()
        return ps
    for a, b in zip(run(5), run(5, split=3)):
        assert np.array_equal(a, b)


def test_clip_grad_norm_matches_torch():
    rng = np.random.default_rng(0)
    gs = [rng.standard_normal((3, 4)), rng.standard_normal(5)]
    tps = [torch.zeros(g.shape, dtype=torch.float64, requires_grad=True) for g in gs]
    for tp, g in zip(tps, gs):
        tp.grad = torch.tensor(g.copy())
    pairs = [(np.zeros_like(g), g) for g in gs]
    norm = optim.clip_grad_norm(pairs, 1.5)
    tnorm = torch.nn.utils.clip_grad_norm_(tps, 1.5)
    assert abs(norm - float(tnorm)) < 1e-12
    for g, tp in zip(gs, tps):
        np.testing.assert_allclose(g, tp.grad.numpy(), rtol=0, atol=1e-12)
    assert math.isclose(math.sqrt(sum(float((g * g).sum()) for g in gs)), 1.5, rel_tol=1e-6)
    # below the threshold nothing changes
    before = [g.copy() for g in gs]
    optim.clip_grad_norm(pairs, 10.0)
    assert all(np.array_equal(a, b) for a, b in zip(before, gs))


def test_clip_grad_value_matches_torch():
    g = np.random.default_rng(0).standard_normal((4, 4))
    tp = torch.zeros(4, 4, dtype=torch.float64, requires_grad=True)
    tp.grad = torch.tensor(g.copy())
    optim.clip_grad_value([(np.zeros_like(g), g)], 0.5)
    torch.nn.utils.clip_grad_value_([tp], 0.5)
    assert np.array_equal(g, tp.grad.numpy())


def test_optimizers_update_a_model_in_place():
    model = npnn.Linear(3, 2, dtype="float64", seed=0)
    w = model.params["weight"]
    before = w.copy()
    opt = optim.Adam(model, lr=0.1)
    model.grads["weight"][...] = 1.0
    opt.step()
    assert model.params["weight"] is w and not np.array_equal(w, before)
    opt.zero_grad()
    assert not model.grads["weight"].any()


def test_schedules_match_torch():
    p = torch.zeros(1, requires_grad=True)
    for ours_cls, theirs_cls, kw in ((optim.StepLR, torch.optim.lr_scheduler.StepLR,
                                      dict(step_size=3, gamma=0.5)),
                                     (optim.CosineAnnealingLR,
                                      torch.optim.lr_scheduler.CosineAnnealingLR,
                                      dict(T_max=7, eta_min=0.01))):
        ours_opt = optim.SGD([(np.zeros(1), np.zeros(1))], lr=0.2)
        theirs_opt = torch.optim.SGD([p], lr=0.2)
        ours, theirs = ours_cls(ours_opt, **kw), theirs_cls(theirs_opt, **kw)
        for _ in range(7):
            theirs_opt.step()
            ours.step()
            theirs.step()
            assert abs(ours_opt.lr - theirs_opt.param_groups[0]["lr"]) < 1e-12


@pytest.mark.parametrize("call, message", [
    (lambda ps: optim.SGD(ps, lr=-1), "expected lr in [0.0, inf), got -1"),
    (lambda ps: optim.SGD(ps, lr=0.1, nesterov=True), "expected momentum > 0 and dampening = 0"),
    (lambda ps: optim.Adam(ps, betas=(1.0, 0.9)), "expected betas[0] in [0.0, 1.0), got 1.0"),
    (lambda ps: optim.clip_grad_norm(ps, 0), "expected max_norm in (0.0, inf), got 0"),
    (lambda ps: optim.SGD([], lr=0.1), "at least one (parameter, gradient) pair"),
])
def test_bad_hyperparameters(call, message):
    with pytest.raises(ValueError) as info:
        call([(np.zeros(2), np.zeros(2))])
    assert message in str(info.value)
