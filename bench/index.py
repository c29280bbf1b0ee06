"""Benchmark the similarity index and k-means: Labeler's code paths vs faiss's own raw calls, same run, same data.

For each N (default 100k and 1M) of D-dim float32 vectors (default 512):

* a project is made with N image rows and the vectors stored as its CLIP feature set (float16, like real
  features), then
* **exact**: ``get_index(switch_at=inf)`` (flat) vs a raw ``faiss.IndexFlatIP`` on the same float32 data;
* **ivf**: ``get_index(switch_at=0)`` (trained, nprobe tuned to recall@20 >= 0.95) vs a raw
  ``faiss.IndexIVFFlat`` with the same nlist, training sample and nprobe;
* **k-means**: ``labeler.clusters.kmeans`` vs ``faiss.Kmeans`` with the same parameters + assignment.

Reported: build time (ours split into row-map/SQL + float16→float32 load, train, add, nprobe tuning, save), index
memory (bytes of the index + RSS growth), single-query latency (the UI case: one query at a time, mean and p95
over ``--queries`` queries) and batched latency (all queries in one call, per query), recall@20 against exact
search for (a) database vectors as queries, own row left out (what nprobe is tuned on) and (b) new vectors from
the same distribution, and every ours/raw ratio.

Data (see :func:`make_data`): ``embedding`` (default) imitates image embeddings (a low-dimensional latent plus
noise and a common direction; nearest-neighbour and random-pair cosines like CLIP's); ``clusters`` adds
``--centres`` cluster centres; ``uniform`` draws isotropic Gaussian vectors, the worst case for IVF (no
structure: recall needs most lists probed).

``--switch-scan 10000,25000,50000,100000,200000`` measures instead, at each size, flat vs tuned-IVF single-query
latency and the IVF build time: the data behind ``labeler.index.DEFAULT_SWITCH``.

Usage::

    python bench/index.py --n 100000 --threads 1
    python bench/index.py --n 20000 --queries 50 --kmeans-k 20          # quick
    python bench/index.py --switch-scan 10000,25000,50000,100000,200000

Timings on a shared machine are noisy: compare ratios within one run.
"""

from __future__ import annotations

import argparse
import functools
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import faiss  # noqa: E402
import numpy as np  # noqa: E402

from labeler import clusters  # noqa: E402
from labeler import index as lindex  # noqa: E402
from labeler.project import Project  # noqa: E402

_PAGE = os.sysconf("SC_PAGE_SIZE")


def rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * _PAGE / 2**20


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def make_data(n: int, d: int, kind: str, centres: int = 100, seed: int = 0) -> np.ndarray:
    """(n, d) float32 unit rows, generated in chunks; the structure (basis, centres, mean) is the same for
    every ``seed``, which only draws the samples (so seed 12345 gives new queries from the same distribution).

    ``embedding``: a 32-d latent with a decaying spectrum + isotropic noise + a common mean direction: nearest
    neighbours at cosine ~0.86 and random pairs at ~0.38, about what CLIP ViT-B/32 image features show
    (~0.85-0.9 and ~0.45). ``clusters``: the same plus ``centres`` random cluster centres. ``uniform``: isotropic.
    """
    structure = np.random.default_rng(0)
    r = 32
    basis = np.linalg.qr(structure.standard_normal((d, r)))[0].astype(np.float32)
    spectrum = np.exp(-np.arange(r) / (r / 3)).astype(np.float32)
    spectrum /= np.sqrt((spectrum**2).sum())
    mean = structure.standard_normal(d).astype(np.float32)
    mean /= np.linalg.norm(mean)
    cent = structure.standard_normal((centres, d)).astype(np.float32)
    cent /= np.linalg.norm(cent, axis=1, keepdims=True)
    rng = np.random.default_rng(seed)
    out = np.empty((n, d), dtype=np.float32)
    for s in range(0, n, 100_000):
        m = min(n, s + 100_000) - s
        noise = rng.standard_normal((m, d), dtype=np.float32) / np.sqrt(d)
        if kind == "uniform":
            out[s : s + m] = noise
            continue
        z = rng.standard_normal((m, r), dtype=np.float32) * spectrum
        block = z @ basis.T + 0.3 * noise + 0.8 * mean
        if kind == "clusters":
            block += 0.5 * cent[rng.integers(0, centres, m)]
        out[s : s + m] = block
    out /= np.linalg.norm(out, axis=1, keepdims=True)
    return out


def make_project(root: Path, x: np.ndarray) -> Project:
    """A project with one ok image per row and the rows stored as its CLIP features."""
    p = Project.create(root, ["a", "b"])
    n = len(x)
    with p.db.conn:
        p.db.conn.executemany(
            "insert into images (sha256, path, rel_path, root, status) values (?, ?, ?, '/x', 'ok')",
            ((f"{i:064x}", f"/x/{i}.jpg", f"{i}.jpg") for i in range(n)),
        )
    sid = p.features.ensure_set("clip:bench:none", "clip", x.shape[1], model="bench", pretrained="")
    step = 100_000
    for s in range(0, n, step):
        p.features.append(sid, [f"{i:064x}" for i in range(s, min(n, s + step))], x[s : s + step])
    return p


def timed(fn, *a, **kw):
    t0 = time.perf_counter()
    out = fn(*a, **kw)
    return out, time.perf_counter() - t0


def latency(search_one, queries: np.ndarray) -> tuple[float, float]:
    """Mean and p95 ms of one-query-at-a-time searches."""
    times = []
    for i in range(len(queries)):
        t0 = time.perf_counter()
        search_one(queries[i : i + 1])
        times.append(time.perf_counter() - t0)
    t = np.array(times) * 1000
    return float(t.mean()), float(np.percentile(t, 95))


def batched(search_all, queries: np.ndarray) -> float:
    t0 = time.perf_counter()
    search_all(queries)
    return (time.perf_counter() - t0) * 1000 / len(queries)


def row(label: str, ours: float, raw: float, unit: str = "s") -> str:
    ratio = ours / raw if raw > 0 else float("nan")
    return f"  {label:<34} ours {ours:10.3f} {unit:<4} raw faiss {raw:10.3f} {unit:<4} ratio {ratio:5.2f}x"


def query_latencies(fi, raw, q_db, nq: int, k: int) -> tuple[float, float, float, float, float, float]:
    """Print and return single-query mean/p95 and batched per-query latency (ms), ours vs raw faiss."""
    lo, p95o = latency(functools.partial(fi.search, k=k), q_db[:nq])
    lr, p95r = latency(functools.partial(raw.search, k=k), q_db[:nq])
    print(row(f"single query (mean of {nq})", lo, lr, "ms"))
    print(row("single query p95", p95o, p95r, "ms"))
    bo = batched(functools.partial(fi.search, k=k), q_db)
    br = batched(functools.partial(raw.search, k=k), q_db)
    print(row(f"batched, per query ({len(q_db)} in one call)", bo, br, "ms"))
    return lo, lr, p95o, p95r, bo, br


def bench_size(n: int, args, tmp: Path) -> dict:
    d, k = args.dim, 20
    print(
        f"\n=== N = {n:,} vectors, D = {d}, {args.data} data, faiss threads = {faiss.omp_get_max_threads()} ===",
        flush=True,
    )
    x, t = timed(make_data, n, d, args.data, args.centres, 0)
    rng = np.random.default_rng(1)
    qi = np.sort(rng.choice(n, size=args.queries, replace=False))
    new_q = fresh_queries(args, args.queries)
    print(f"  data generated in {t:.1f} s", flush=True)
    project, t = timed(make_project, tmp / f"p{n}", x)
    print(f"  project with {n:,} images + float16 features written in {t:.1f} s", flush=True)
    # Both sides search the vectors as stored (float16-rounded), so exact top-k is the same ground truth.
    x = lindex.as_unit_float32(np.asarray(project.features.matrix(1), dtype=np.float32))
    q_db = np.ascontiguousarray(x[qi])
    _, truth_db = faiss.knn(q_db, x, k + 1, metric=faiss.METRIC_INNER_PRODUCT)
    truth_db = lindex._drop_self(truth_db, qi, k)
    _, truth_new = faiss.knn(new_q, x, k, metric=faiss.METRIC_INNER_PRODUCT)
    res: dict = {"n": n}

    parts = set(args.parts.split(","))
    nq = min(len(q_db), args.single)
    if "exact" in parts:
        res["exact"] = bench_exact(project, x, q_db, qi, truth_db, nq, k)
    if "ivf" in parts:
        res["ivf"] = bench_ivf(project, x, q_db, qi, truth_db, new_q, truth_new, nq, k)
    if "kmeans" in parts:
        res["kmeans"] = bench_kmeans(x, args)
    print(f"  peak RSS so far {peak_rss_mb():.0f} MB", flush=True)
    project.close()
    return res


def bench_exact(project, x, q_db, qi, truth_db, nq, k) -> dict:
    n, d = x.shape
    ids_of_rows = np.arange(1, n + 1)  # image id of row r is r + 1 here
    lindex.clear_cache()
    rss0 = rss_mb()
    fi, t_ours = timed(lindex.get_index, project, "clip", switch_at=10**12)
    mem_ours = rss_mb() - rss0
    raw = faiss.IndexFlatIP(d)
    rss0 = rss_mb()
    _, t_raw = timed(raw.add, x)
    mem_raw = rss_mb() - rss0
    print("exact (IndexFlatIP)")
    print(row("build (ours: + SQL row map, load)", t_ours, t_raw))
    print(
        f"  {'memory (RSS growth)':<34} ours {mem_ours:10.1f} MB   raw faiss {mem_raw:10.1f} MB   "
        f"index {n * d * 4 / 2**20:.0f} MB"
    )
    lo, lr, p95o, p95r, bo, br = query_latencies(fi, raw, q_db, nq, k)
    _, got = fi.search_images(ids_of_rows[qi], k)
    print(f"  recall@20 (sanity, exact)          {lindex.recall_at_k(got - 1, truth_db):.4f}")
    lindex.clear_cache()
    return {"build": (t_ours, t_raw), "single_ms": (lo, lr), "p95_ms": (p95o, p95r), "batch_ms": (bo, br)}


def bench_ivf(project, x, q_db, qi, truth_db, new_q, truth_new, nq, k) -> dict:
    n, d = x.shape
    ids_of_rows = np.arange(1, n + 1)
    lindex.clear_cache()
    rss0 = rss_mb()
    fi, t_ours = timed(lindex.get_index, project, "clip", switch_at=0, rebuild=True)
    mem_ours = rss_mb() - rss0
    m = fi.meta
    nlist, nprobe = m["nlist"], m["nprobe"]
    ivf_file = lindex.index_dir(project, fi.key) / lindex.INDEX_FILE
    # Raw: the same nlist, training-sample size and seed, the same nprobe.
    n_train = min(n, lindex.TRAIN_PER_LIST * nlist)
    sample = x if n_train == n else x[np.sort(np.random.default_rng(0).choice(n, size=n_train, replace=False))]
    rss0 = rss_mb()
    quant = faiss.IndexFlatIP(d)
    raw = faiss.IndexIVFFlat(quant, d, nlist, faiss.METRIC_INNER_PRODUCT)
    raw.cp.seed = 0
    raw.cp.max_points_per_centroid = lindex.TRAIN_PER_LIST
    _, t_train = timed(raw.train, sample)
    _, t_add = timed(raw.add, x)
    mem_raw = rss_mb() - rss0
    raw.nprobe = nprobe
    t_raw = t_train + t_add
    tm = fi.meta["timings"]
    t_parts = " / ".join(f"{tm[key]:.2f}" for key in ("row_map_s", "load_s", "train_s", "add_s", "tune_s", "save_s"))
    print(f"ivf (IndexIVFFlat, nlist {nlist}, tuned nprobe {nprobe}, tuning recall@20 {m['recall']:.4f})")
    print(row("build total (ours: + tune + save)", t_ours, t_raw))
    print(f"  build ratio ours/raw faiss: {t_ours / t_raw:.2f}x (goal <= 1.2; ours also tunes nprobe and saves)")
    print(f"  {'raw: train / add':<34} {t_train:.2f} / {t_add:.2f} s")
    print(f"  {'ours: SQL row map / load f16 / train / add / tune / save':<34} {t_parts} s")
    print(
        f"  {'memory (RSS growth)':<34} ours {mem_ours:10.1f} MB   raw faiss {mem_raw:10.1f} MB   "
        f"file {ivf_file.stat().st_size / 2**20:.0f} MB"
    )
    lo, lr, p95o, p95r, bo, br = query_latencies(fi, raw, q_db, nq, k)
    _, got = fi.search_images(ids_of_rows[qi], k)
    rec_db = lindex.recall_at_k(got - 1, truth_db)
    _, got_new = fi.search(new_q, k)
    rec_new = lindex.recall_at_k(got_new - 1, truth_new)
    _, raw_new = raw.search(new_q, k)
    print(
        f"  recall@20 vs exact: database queries (own row out) {rec_db:.4f}; new queries {rec_new:.4f} "
        f"(raw faiss, same nprobe: {lindex.recall_at_k(raw_new, truth_new):.4f})"
    )
    lindex.clear_cache()
    reopened, t_load = timed(lindex.get_index, project, "clip")
    _, t_read = timed(faiss.read_index, str(ivf_file))
    _, t_mmap = timed(faiss.read_index, str(ivf_file), faiss.IO_FLAG_MMAP)
    same = np.array_equal(reopened.search(new_q, k)[1], fi.search(new_q, k)[1])
    print(
        f"  reopen (get_index in a fresh cache: SQL row map + row hash + index file): {t_load:.3f} s "
        f"(memory-mapped: {reopened.mapped}; same results as the built index: {same}); raw faiss read_index "
        f"{t_read:.3f} s, with IO_FLAG_MMAP {t_mmap:.3f} s"
    )
    lindex.clear_cache()
    return {
        "build": (t_ours, t_raw),
        "single_ms": (lo, lr),
        "p95_ms": (p95o, p95r),
        "batch_ms": (bo, br),
        "recall_db": rec_db,
        "recall_new": rec_new,
        "nlist": nlist,
        "nprobe": nprobe,
    }


def bench_kmeans(x, args) -> tuple[float, float]:
    d = x.shape[1]
    kk = args.kmeans_k

    def raw_kmeans():
        km = faiss.Kmeans(d, kk, niter=20, nredo=clusters.NREDO, seed=0, spherical=True, verbose=False)
        km.train(x)
        return km.index.search(x, 1)

    # Alternate ours and raw and keep each one's best, so a burst of load on a shared machine hits both alike.
    t_ours = t_raw = float("inf")
    for _ in range(args.repeat):
        t_ours = min(t_ours, timed(clusters.kmeans, x, kk, niter=20, seed=0)[1])
        t_raw = min(t_raw, timed(raw_kmeans)[1])
    print(
        f"k-means (k={kk}, 20 iterations, nredo {clusters.NREDO}, spherical, + assigning all N; best of {args.repeat})"
    )
    print(row("train + assign", t_ours, t_raw))
    return t_ours, t_raw


def fresh_queries(args, n_q: int) -> np.ndarray:
    """New vectors from the same distribution as the data, none of them in the index."""
    return make_data(n_q, args.dim, args.data, args.centres, seed=12345)


def switch_scan(sizes: list[int], args) -> None:
    d, k = args.dim, 20
    print(
        f"switch-point scan: D = {d}, {args.data} data, faiss threads = {faiss.omp_get_max_threads()}, "
        f"{args.single} single queries each"
    )
    print(f"{'N':>9} {'flat ms/q':>10} {'ivf ms/q':>9} {'nlist':>6} {'nprobe':>6} {'recall':>7} {'ivf build s':>11}")
    for n in sizes:
        x = make_data(n, d, args.data, args.centres, 0)
        q = x[np.random.default_rng(1).choice(n, size=args.single, replace=False)]
        flat, _ = lindex.build_faiss_index(x, switch_at=10**12)
        (ivf, info), t_build = timed(lindex.build_faiss_index, x, switch_at=0)
        lf, _ = latency(functools.partial(flat.search, k=k), q)
        li, _ = latency(functools.partial(ivf.search, k=k), q)
        print(
            f"{n:>9,} {lf:>10.2f} {li:>9.2f} {info['nlist']:>6} {info['nprobe']:>6} {info['recall']:>7.3f} "
            f"{t_build:>11.2f}",
            flush=True,
        )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", default="100000,1000000", help="comma-separated sizes (default 100000,1000000)")
    ap.add_argument("--dim", type=int, default=512)
    ap.add_argument("--queries", type=int, default=500, help="queries for recall and batched timing")
    ap.add_argument("--single", type=int, default=100, help="one-at-a-time queries for latency")
    ap.add_argument("--kmeans-k", type=int, default=100)
    ap.add_argument("--repeat", type=int, default=2, help="k-means runs of each side (best kept)")
    ap.add_argument("--parts", default="exact,ivf,kmeans", help="which comparisons to run (comma-separated)")
    ap.add_argument("--data", choices=["embedding", "clusters", "uniform"], default="embedding")
    ap.add_argument("--centres", type=int, default=100, help="--data clusters: cluster centres")
    ap.add_argument("--threads", type=int, default=0, help="faiss OpenMP threads (0: faiss default)")
    ap.add_argument("--switch-scan", help="comma-separated sizes: measure flat vs IVF instead")
    args = ap.parse_args()
    if args.threads:
        faiss.omp_set_num_threads(args.threads)
    print(f"faiss {faiss.__version__}, {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f}")
    if args.switch_scan:
        switch_scan([int(s) for s in args.switch_scan.split(",")], args)
        return
    with tempfile.TemporaryDirectory() as tmp:
        for n in [int(s) for s in args.n.split(",")]:
            bench_size(n, args, Path(tmp))
    print(
        f"\npeak RSS {peak_rss_mb():.0f} MB; goal: < 20 ms/query at 1M with recall@20 >= 0.95, "
        "k-means within 1.1x of raw faiss"
    )


if __name__ == "__main__":
    main()
