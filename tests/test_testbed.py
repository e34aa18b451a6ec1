"""The experts testbed: no path around the experts, routing over all of them (others frozen), router rows per expert."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

import fedloop
from fedloop.aggregation import aggregate_rows
from fedloop.client import train_local
from fedloop.model import MoE
from tests.scripts import load_script
from tests.test_fedloop import SMALL


def test_without_the_residual_path_the_prediction_passes_through_the_experts():
    torch.manual_seed(0)
    model = MoE((1, 8, 8), 10, 4, top_k=1, residual=False)
    x = torch.rand(5, 1, 8, 8)
    for expert in model.experts:
        for p in expert.parameters():
            torch.nn.init.zeros_(p)
    logits = model(x).logits
    assert torch.allclose(logits, model.head.bias.expand_as(logits))  # nothing left but the head's bias
    experts = sum(p.numel() for p in model.experts.parameters())
    assert experts > 0.5 * sum(p.numel() for p in model.parameters())  # the experts hold most parameters


def test_switch_gates_train_the_router_with_one_expert_per_sample():
    torch.manual_seed(0)
    model = MoE((6,), 3, 4, top_k=1, residual=False)
    out = model(torch.rand(8, 6))
    torch.nn.functional.cross_entropy(out.logits, torch.zeros(8, dtype=torch.long)).backward()
    assert model.router.weight.grad is not None and model.router.weight.grad.abs().sum() > 0


def test_routing_over_all_experts_keeps_the_unassigned_ones_frozen():
    torch.manual_seed(0)
    model = MoE((6,), 3, 5, top_k=2, residual=False)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    x, y = torch.rand(40, 6), torch.randint(0, 3, (40,))
    res = train_local(model, x, y, [1, 3], epochs=2, lr=0.5, route_all=True)
    after = model.state_dict()
    for j in (0, 2, 4):
        for key in [k for k in before if k.startswith(f"experts.{j}.")]:
            assert torch.equal(before[key], after[key])
    assert set(res.experts) == {1, 3}
    assert res.routed.sum() > res.routed[[1, 3]].sum()  # samples also went to frozen experts
    assert all(p.requires_grad for p in model.parameters())  # unfrozen again afterwards


def test_router_rows_average_over_each_experts_trainers():
    current = torch.zeros(3, 2)
    parts = {0: [(torch.tensor([1.0, 1.0]), 1.0), (torch.tensor([3.0, 3.0]), 3.0)], 1: [], 2: [(torch.ones(2), 0.0)]}
    out = aggregate_rows(current, parts)
    assert out[0].tolist() == [2.5, 2.5] and out[1].tolist() == [0.0, 0.0] and out[2].tolist() == [0.0, 0.0]


def test_an_experts_testbed_round_sends_every_expert_down_and_only_the_trained_up():
    base = SMALL | dict(rounds=1, policy="round_robin", max_experts=1)
    residual = fedloop.run(fedloop.FedConfig(**base))
    experts = fedloop.run(fedloop.FedConfig(**(base | {"testbed": "experts"})))
    r0, e0 = residual.records[0], experts.records[0]
    assert e0.bytes_down > e0.bytes_up
    setup = fedloop.build(fedloop.FedConfig(**(base | {"testbed": "experts"})))
    state = setup.model.state_dict()
    per_client = sum(v.numel() * v.element_size() for v in state.values())
    assert e0.bytes_down == per_client * e0.participants
    assert r0.bytes_down == r0.bytes_up or r0.completed < r0.participants


def test_router_rows_of_untrained_experts_keep_their_weights():
    config = fedloop.FedConfig(**(SMALL | dict(rounds=1, policy="round_robin", max_experts=1, testbed="experts")))
    from fedloop.loop import run_round

    setup = fedloop.build(config)
    before = setup.model.state_dict()["router.weight"].clone()
    record = run_round(setup, 0, fedloop.build(config).model)
    weight = setup.model.state_dict()["router.weight"]
    assert 0 in record.loads and record.completed > 0
    for j, load in enumerate(record.loads):
        if load == 0:
            assert torch.equal(weight[j], before[j])
    assert not torch.equal(weight, before)


def test_flower_refuses_the_experts_testbed():
    pytest.importorskip("flwr", reason="the flower extra is not installed")
    from fedloop.flower import AlignedMoEStrategy

    with pytest.raises(fedloop.ConfigError, match="testbed"):
        AlignedMoEStrategy(fedloop.FedConfig(**(SMALL | {"testbed": "experts"})))


def test_feature_norm_centres_the_features_over_the_batch_and_keeps_running_statistics():
    torch.manual_seed(0)
    model = MoE((1, 8, 8), 10, 4, top_k=1, residual=False, feature_norm=True)
    x = torch.rand(32, 1, 8, 8)  # non-negative images: without the norm the features share a large common part
    model.train()
    h = model.encoder(x)
    assert torch.allclose(h.mean(dim=0), torch.zeros(h.shape[1]), atol=1e-5)
    stats = {k: v for k, v in model.state_dict().items() if "running_mean" in k}
    assert len(stats) == 1 and float(next(iter(stats.values())).abs().sum()) > 0  # the pass moved them
    assert not any(fedloop.model.is_expert_key(k) for k in stats)  # shared state, averaged like the encoder
    model.eval()
    one = model.encoder(x[:1])
    assert torch.allclose(one, model.encoder(x)[:1])  # evaluation uses the running statistics, not the batch
    assert not [m for m in MoE((1, 8, 8), 10, 4, residual=False).modules() if isinstance(m, torch.nn.BatchNorm1d)]


def test_a_run_with_feature_norm_averages_the_running_statistics():
    from fedloop.loop import run_round

    config = fedloop.FedConfig(**(SMALL | dict(rounds=1, testbed="experts", feature_norm=True)))
    setup = fedloop.build(config)
    key = next(k for k in setup.model.state_dict() if k.endswith("running_mean"))
    before = setup.model.state_dict()[key].clone()
    record = run_round(setup, 0, fedloop.build(config).model)
    assert record.completed > 0 and 0.0 <= record.accuracy <= 1.0
    assert not torch.equal(setup.model.state_dict()[key], before)  # the clients' statistics reached the model
    with pytest.raises(fedloop.ConfigError, match="feature_norm: must be True or False"):
        fedloop.FedConfig(**(SMALL | {"feature_norm": "yes"})).validate()


def test_silent_units_counts_the_units_no_input_activates():
    from fedloop.model import silent_units

    torch.manual_seed(0)
    model = MoE((6,), 3, 3, top_k=1, expert_hidden=4, residual=False)
    x = torch.randn(50, 6)
    with torch.no_grad():
        model.experts[1][0].bias[:3] = -1e6  # three units of expert 1 can never fire
        model.experts[2][0].bias[:] = 1e6  # every unit of expert 2 always fires
    counts = silent_units(model, x)
    assert counts.shape == (3,) and counts[1] == 3 and counts[2] == 0
    assert model.training  # left as it was


def test_the_collapse_script_measures_both_settings_per_round(monkeypatch, tmp_path):
    import csv

    from fedloop import tasks

    monkeypatch.setitem(
        tasks.TASKS, "tiny", dict(dataset="synthetic", data_options={"samples_per_client": 20, "test_size": 60})
    )
    monkeypatch.setitem(tasks.VERSIONS, "tiny", "v7")
    module = load_script("benchmarks/run_collapse.py")
    module.main(
        [
            "--task",
            "tiny",
            "--quick",
            "--seeds",
            "1",
            "--rounds",
            "2",
            "--probe",
            "50",
            "--clients",
            "2",
            "--out",
            str(tmp_path),
        ]
    )
    rows = list(csv.DictReader(open(tmp_path / "collapse.csv")))
    assert [(r["feature_norm"], r["round"]) for r in rows] == [
        ("False", "0"),
        ("False", "1"),
        ("True", "0"),
        ("True", "1"),
    ]
    for r in rows:
        assert 0.0 <= float(r["accuracy"]) <= 1.0 and 0.0 < float(r["top_share"]) <= 1.0
        assert 0.0 <= float(r["entropy"]) <= 1.0 and 0 <= int(r["dead"]) <= int(r["silent"])
    drift = list(csv.DictReader(open(tmp_path / "collapse_drift.csv")))
    assert [(d["feature_norm"], d["assigned"]) for d in drift[:2]] == [("False", "top"), ("False", "bottom")]
    for d in drift:
        assert 0.0 <= float(d["before"]) <= 1.0 and 0.0 <= float(d["after"]) <= 1.0
        assert len(d["experts"].split()) == 2
    top = [float(d["before"]) for d in drift if d["assigned"] == "top"]
    bottom = [float(d["before"]) for d in drift if d["assigned"] == "bottom"]
    assert all(t >= b for t, b in zip(top, bottom))  # the most routed-to experts hold at least the least's share
    md = (tmp_path / "collapse.md").read_text()
    assert "| off | 0 |" in md and "| on | 0 |" in md and "after rounds 1 and 2".lower() in md.lower()
    assert "| on | 0 | bottom | 2 |" in md
    assert "Task `tiny` (v7)" in md  # labelled with the task's own definition, not the default one


def test_local_routing_assigned_trains_only_on_the_assigned_experts_and_sends_only_them():
    from fedloop.loop import run_round

    base = SMALL | dict(rounds=1, policy="round_robin", max_experts=1, testbed="experts")
    every = fedloop.FedConfig(**base)
    masked = fedloop.FedConfig(**(base | {"local_routing": "assigned"}))
    assert every.routes_all() and not masked.routes_all()
    assert not fedloop.FedConfig(**(SMALL | {"local_routing": "assigned"})).routes_all()  # residual: always masked
    records = {}
    for name, cfg in (("all", every), ("assigned", masked)):
        setup = fedloop.build(cfg)
        records[name] = run_round(setup, 0, fedloop.build(cfg).model)
    a, b = records["all"], records["assigned"]
    assert a.trained == b.trained and a.loads == b.loads  # the same plan
    assert b.bytes_down < a.bytes_down  # only the assigned experts go down
    # every routed sample of a masked client went to its one assigned expert: routing follows the assignment
    model = fedloop.build(masked).model
    x, y = torch.rand(30, *fedloop.build(masked).data.input_shape), torch.randint(0, 2, (30,))
    res = train_local(model, x, y, [2], epochs=1, lr=0.1, route_all=masked.routes_all())
    assert res.routed[2] == res.routed.sum() > 0
    with pytest.raises(fedloop.ConfigError, match="local_routing: must be one of all, assigned"):
        fedloop.FedConfig(**(SMALL | {"local_routing": "some"})).validate()


# -- token inputs: a causal encoder read at the last position, and a router over the last token --------------------


def _token_model(**kwargs) -> MoE:
    torch.manual_seed(0)
    return MoE((12,), 20, 4, top_k=1, vocab=20, residual=False, **kwargs)


def test_the_token_encoder_sees_the_last_tokens_in_order_and_nothing_earlier_than_its_window():
    model = _token_model().eval()
    x = torch.randint(0, 20, (6, 12))
    h = model.encoder(x)
    early = x.clone()
    early[:, :3] = (early[:, :3] + 1) % 20  # before the two 5-wide causal convolutions' 9-token window
    assert torch.equal(model.encoder(early), h)
    swapped = x.clone()
    swapped[:, [-1, -2]] = x[:, [-2, -1]]
    swapped[x[:, -1] == x[:, -2], -1] = (x[x[:, -1] == x[:, -2], -1] + 1) % 20  # a swap that changes something
    changed = (model.encoder(swapped) - h).abs().amax(dim=1) > 1e-6
    assert bool(changed.all())  # the order of the last tokens reaches the features


def test_the_token_model_reads_only_its_context_and_computes_what_the_whole_window_gives():
    model = _token_model(feature_norm=True)
    assert model.context == 9  # 1 + (5 - 1) + (5 - 1): the two causal convolutions' reach
    model.eval()
    x = torch.randint(0, 20, (6, 80))
    whole = model.encoder(x)
    assert torch.allclose(model.features(x), whole, atol=1e-6, rtol=0)
    # the cut is no shorter than what the features depend on: one token less changes them
    assert not torch.allclose(model.encoder(x[:, -(model.context - 1) :]), whole, atol=1e-4)
    short = x[:, -5:]  # a window shorter than the context is read whole
    assert torch.equal(model.features(short), model.encoder(short))
    out = model(x)  # and the model's output is that of the whole window
    model.context = None
    assert torch.allclose(model(x).logits, out.logits, atol=1e-6, rtol=0)
    assert torch.equal(model(x).top, out.top)
    assert MoE((1, 28, 28), 10, 4).context is None  # images: the whole input


def test_a_token_router_reads_the_last_token_alone():
    model = _token_model(router_input="token").eval()
    assert model.router.in_features == model.encoder[0].embedding_dim
    x = torch.randint(0, 20, (8, 12))
    y = torch.randint(0, 20, (8, 12))
    y[:, -1] = x[:, -1]  # same last token, different everything else
    assert torch.allclose(model(x).probs, model(y).probs)
    z = x.clone()
    z[:, -1] = (x[:, -1] + 1) % 20
    assert not torch.allclose(model(z).probs, model(x).probs)
    out = model(x, mask=torch.tensor([True, False, True, False]))
    assert set(out.top.flatten().tolist()) <= {0, 2}
    features = _token_model()
    assert features.router.in_features == 64


def test_a_token_router_trains_the_embedding_and_its_rows_from_the_task_loss():
    model = _token_model(router_input="token")
    x, y = torch.randint(0, 20, (16, 12)), torch.randint(0, 20, (16,))
    out = model(x)
    torch.nn.functional.cross_entropy(out.logits, y).backward()
    assert model.router.weight.grad.abs().sum() > 0


def test_router_input_is_checked_where_it_is_given():
    with pytest.raises(ValueError, match="router_input: must be one of features, token; got 'last'"):
        _token_model(router_input="last")
    with pytest.raises(ValueError, match="router_input: 'token' needs token inputs"):
        MoE((6,), 3, 4, router_input="token")
    with pytest.raises(fedloop.ConfigError, match="router_input: must be one of features, token; got 'x'"):
        fedloop.FedConfig(**(SMALL | {"router_input": "x"})).validate()
    with pytest.raises(fedloop.ConfigError, match="router_input: 'token' needs a dataset of token sequences"):
        fedloop.run(fedloop.FedConfig(**(SMALL | {"router_input": "token", "rounds": 1})))


def _bits(t: torch.Tensor) -> torch.Tensor:
    return t.contiguous().view(torch.int32)  # NaN equal to NaN, -0.0 not to 0.0 (float64: two words per value)


def _same_bits(mine, native, maps: torch.Tensor, grad_for) -> torch.Tensor:
    """``mine`` and ``native`` on ``maps``: the same output bits and strides, and, back from the gradient
    ``grad_for(output)``, the same input gradient bits and strides; returns ``native``'s output."""
    a, b = maps.clone().requires_grad_(), maps.clone().requires_grad_()
    out, expected = mine(a), native(b)
    assert torch.equal(_bits(out), _bits(expected)) and out.stride() == expected.stride()
    grad = grad_for(out)
    out.backward(grad)
    expected.backward(grad)
    assert torch.equal(_bits(a.grad), _bits(b.grad))  # to the first maximum, as PyTorch's kernel
    assert a.grad.stride() == b.grad.stride()
    return expected


def _maps(shape: tuple[int, ...], seed: int = 0) -> torch.Tensor:
    """Post-ReLU maps with the ties a pool meets: zero windows, and constant positive background."""
    gen = torch.Generator().manual_seed(seed)
    x = torch.relu(torch.randn(shape, generator=gen))
    x[:, :, : shape[2] // 3] = 0.3
    x[:, :, -3:] = torch.randint(0, 3, (shape[0], shape[1], 3, shape[3]), generator=gen).float()
    return x


def test_the_image_encoders_pools_give_pytorchs_values_and_gradients_bit_for_bit():
    from fedloop.pools import AvgPool, MaxPool2

    x = _maps((5, 8, 28, 28))
    x[0, 0, 0, 1] = float("nan")  # a NaN wins its window, wherever it is
    x[1, 1, 2, 3] = x[1, 1, 3, 3] = float("nan")
    x[2, 2, 4:6, 4:6] = float("-inf")  # a window of -inf keeps its first place
    x[3, 3, 6:8, 6:8] = -0.0
    y = _maps((5, 16, 14, 14), seed=1)
    y[:, :, :3] = 1e-39  # subnormal sums: a mean divided by 2 twice is not always one divided by 4
    y[0, 0, 4:6, 4:6] = -0.0
    last, nchw = torch.channels_last, torch.contiguous_format
    cases = ((MaxPool2(), torch.nn.MaxPool2d(2), x), (AvgPool(7), torch.nn.AdaptiveAvgPool2d(7), y))
    # in either layout (one-channel images can make the first convolution's output channels-last), with a gradient
    # in either layout: PyTorch picks its kernels, and the layouts of what it returns, by them
    for (pool, native, maps), layout, grad_layout in itertools.product(cases, (nchw, last), (nchw, last)):

        def grad_for(out: torch.Tensor, grad_layout=grad_layout) -> torch.Tensor:
            grad = torch.randn_like(out)
            grad[0, 0, 0] = -0.0
            grad[1, 1, 1] = 3e-38
            return grad.contiguous(memory_format=grad_layout)

        maps = maps.contiguous(memory_format=layout)
        expected = _same_bits(pool, native, maps, grad_for)
        with torch.no_grad():
            assert torch.equal(_bits(pool(maps)), _bits(expected))
    with torch.no_grad():  # what the compiled loops do not cover goes to PyTorch
        odd = _maps((2, 3, 7, 9))
        assert torch.equal(MaxPool2()(odd), torch.nn.MaxPool2d(2)(odd))
        assert torch.equal(AvgPool(3)(y), torch.nn.AdaptiveAvgPool2d(3)(y))
        assert torch.equal(MaxPool2()(odd[:, :, :6, :8].double()), torch.nn.MaxPool2d(2)(odd[:, :, :6, :8].double()))
        assert MaxPool2()(x[:0]).shape == (0, 8, 14, 14)


def test_a_rectified_max_pool_then_relu_is_relu_then_max_pool_bit_for_bit():
    """The encoder's order (``fedloop.model._conv_stack``): the ReLU after the pool, on a quarter of the map."""
    from fedloop.pools import MaxPool2

    gen = torch.Generator().manual_seed(2)
    x = torch.randn(4, 8, 28, 28, generator=gen)  # before the ReLU: negatives, windows with no positive value
    x[:, :, :6] = torch.randint(-1, 2, (4, 8, 6, 28), generator=gen).float()  # ties at 1, 0 and among negatives
    x[0, 0, 0, :4] = torch.tensor([-1.0, -0.0, 0.0, -0.0])  # ReLU keeps -0.0 and maps -1 to +0.0
    x[0, 0, 1, :4] = torch.tensor([-2.0, -3.0, -1.0, -1e-45])
    x[1, 1, 8, 8] = float("nan")
    x[1, 1, 9, 9] = x[2, 2, 10, 10] = float("-inf")
    x[3, 3, 12:14, 12:14] = -0.0
    last, nchw = torch.channels_last, torch.contiguous_format
    relu = torch.nn.ReLU()
    for layout, grad_layout, dtype in itertools.product((nchw, last), (nchw, last), (torch.float32, torch.float64)):

        def grad_for(out: torch.Tensor, grad_layout=grad_layout) -> torch.Tensor:
            grad = torch.randn(out.shape, generator=gen, dtype=out.dtype)
            grad[0, 0, 0] = -0.0
            grad[1, 1, 4, 4] = float("nan")  # the NaN window's gradient passes, as through ReLU then pool
            return grad.contiguous(memory_format=grad_layout)

        maps = x.to(dtype).contiguous(memory_format=layout)  # float64 is left to PyTorch's pool, after a ReLU
        _same_bits(
            lambda a: relu(MaxPool2(rectified=True)(a)), lambda b: torch.nn.MaxPool2d(2)(relu(b)), maps, grad_for
        )
    assert "rectified=True" in repr(MaxPool2(rectified=True)) and "rectified" not in repr(MaxPool2())


def test_evaluation_in_image_chunks_gives_what_one_forward_pass_over_the_batch_gives(monkeypatch):
    from fedloop import loop

    torch.manual_seed(0)
    model = MoE((1, 28, 28), 10, 4, top_k=1, residual=False, feature_norm=True).eval()
    x = torch.rand(70, 1, 28, 28)
    y = torch.randint(0, 10, (70,))
    sizes: list[int] = []
    model.register_forward_hook(lambda module, args, out: sizes.append(args[0].shape[0]))
    monkeypatch.setattr(loop, "IMAGE_CHUNK", 16)
    chunked = loop.evaluate_routing(model, x, y, batch_size=32)
    assert sizes == [16, 16, 16, 16, 6]  # batches of 32, 32 and 6, each in chunks of 16
    monkeypatch.setattr(loop, "IMAGE_CHUNK", 10**6)
    whole = loop.evaluate_routing(model, x, y, batch_size=32)
    assert chunked[:2] == whole[:2] and np.array_equal(chunked[2], whole[2])
    with torch.no_grad():
        out = model(x)
    assert chunked[0] == int((out.logits.argmax(dim=1) == y).sum()) / 70


@pytest.mark.parametrize("strides", ["nchw", "channels_last"])
def test_a_training_step_of_the_image_model_is_the_same_bit_for_bit_with_pytorchs_pools(monkeypatch, strides):
    """The whole model, not a pool alone: a pool's output layout decides the next convolution's kernel, so a pool
    that returned the right values in another layout changed training (one-channel image batches whose strides
    make the first convolution's output channels-last, as MNIST's do)."""
    import functools

    from fedloop import model as model_module
    from fedloop import pools

    gen = torch.Generator().manual_seed(3)
    images = (torch.rand(24, 28, 28, generator=gen) > 0.6).float() * torch.rand(24, 28, 28, generator=gen)
    x = images.unsqueeze(1) if strides == "nchw" else images.unsqueeze(3).permute(0, 3, 1, 2)
    assert x.stride() == ((784, 784, 28, 1) if strides == "nchw" else (784, 1, 28, 1))
    y = torch.randint(0, 10, (24,), generator=gen)
    grads = []
    for compiled in (True, False):
        if not compiled:  # the textbook order with PyTorch's pools
            monkeypatch.setattr(model_module, "_conv_stack", functools.partial(model_module._conv_stack, native=True))
        torch.manual_seed(0)
        model = MoE((1, 28, 28), 10, 4, top_k=1, residual=False, feature_norm=True, expert_hidden=2)
        pooled = [type(m) for m in model.encoder if "Pool" in type(m).__name__]
        assert pooled == (
            [pools.MaxPool2, pools.AvgPool] if compiled else [torch.nn.MaxPool2d, torch.nn.AdaptiveAvgPool2d]
        )
        out = model(x)
        (torch.nn.functional.cross_entropy(out.logits, y) + 0.01 * out.aux).backward()
        grads.append({k: _bits(p.grad) for k, p in model.named_parameters() if p.grad is not None})
    assert grads[0].keys() == grads[1].keys() and "encoder.0.weight" in grads[0]
    assert all(torch.equal(grads[0][k], grads[1][k]) for k in grads[0])


def test_importing_fedloop_leaves_numba_to_the_first_pooled_image():
    import subprocess
    import sys

    code = (
        "import sys, torch, fedloop\n"
        "assert 'numba' not in sys.modules, 'import fedloop loaded numba'\n"
        "from fedloop.model import MoE\n"
        "MoE((1, 28, 28), 10, 2, residual=False).eval()(torch.rand(2, 1, 28, 28))\n"
        "assert 'numba' in sys.modules and 'fedloop._pool_kernels' in sys.modules\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
