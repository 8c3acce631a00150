"""Offline evaluation of the serving recommender on MovieLens-100K: ranking metrics per variant and k."""

from __future__ import annotations

import argparse
import math
import random
import time
import uuid
from collections import defaultdict
from dataclasses import dataclass, replace
from pathlib import Path

from bench import machine
from fastapi_recom.config import Settings
from fastapi_recom.movielens import (
    fetch_dataset,
    movie_uuid,
    read_interactions,
    to_score,
    user_uuid,
)
from fastapi_recom.recommender import RatingMatrix, Strategy

TOP_K = 10
SEED = 42
TRAIN_RATIO = 0.75
ROOT = Path(__file__).resolve().parents[1]

Triple = tuple[uuid.UUID, uuid.UUID, int]


@dataclass(frozen=True, slots=True)
class Scores:
    precision: float
    recall: float
    ndcg: float
    map: float
    map_at_k: float
    coverage: float
    seconds_per_user: float


def stratified_split(
    triples: list[Triple], ratio: float, seed: int
) -> tuple[list[Triple], list[Triple]]:
    """Per viewer, a random `ratio` of their ratings to train and the rest to test (Recommenders'
    python_stratified_split by user)."""
    by_user: dict[uuid.UUID, list[Triple]] = defaultdict(list)
    for triple in triples:
        by_user[triple[0]].append(triple)
    rng = random.Random(seed)
    train: list[Triple] = []
    test: list[Triple] = []
    for user in sorted(by_user):
        ratings = sorted(by_user[user], key=lambda t: t[1])
        rng.shuffle(ratings)
        cut = round(len(ratings) * ratio)
        train.extend(ratings[:cut])
        test.extend(ratings[cut:])
    return train, test


def evaluate(
    matrix: RatingMatrix, test: list[Triple], strategy: Strategy, k: int = TOP_K
) -> Scores:
    """Precision, recall, nDCG, MAP at k as Microsoft Recommenders defines them (binary relevance:
    every test rating is relevant), and catalogue coverage of the top-k lists."""
    relevant: dict[uuid.UUID, set[uuid.UUID]] = defaultdict(set)
    for user, movie, _ in test:
        relevant[user].add(movie)
    precision = recall = ndcg = ap = ap_k = 0.0
    shown: set[uuid.UUID] = set()
    started = time.perf_counter()
    for user, wanted in relevant.items():
        picks = [p.movie_id for p in matrix.recommend(user, k, strategy).picks]
        shown.update(picks)
        hits = [i for i, movie in enumerate(picks) if movie in wanted]
        precision += len(hits) / k
        recall += len(hits) / len(wanted)
        dcg = sum(1 / math.log2(i + 2) for i in hits)
        idcg = sum(1 / math.log2(i + 2) for i in range(min(len(wanted), k)))
        ndcg += dcg / idcg
        # Average precision over the hit ranks; Recommenders' `map` divides by all relevant
        # items, its `map_at_k` by min(relevant, k).
        precisions = sum((n + 1) / (i + 1) for n, i in enumerate(hits))
        ap += precisions / len(wanted)
        ap_k += precisions / min(len(wanted), k)
    elapsed = time.perf_counter() - started
    n = len(relevant)
    return Scores(
        precision / n,
        recall / n,
        ndcg / n,
        ap / n,
        ap_k / n,
        len(shown) / matrix.n_movies,
        elapsed / n,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--plot", type=Path, help="save nDCG@10 against k as a PNG here")
    args = parser.parse_args()

    data = fetch_dataset()
    triples = [
        (user_uuid(r.user_id), movie_uuid(r.item_id), to_score(r.rating))
        for r in read_interactions(data)
    ]
    train, test = stratified_split(triples, TRAIN_RATIO, SEED)
    matrix = RatingMatrix.from_triples(train)
    default = Settings().strategy
    print(
        f"MovieLens-100K: {len(triples)} ratings, train {len(train)}, test {len(test)}, "
        f"seed {SEED}; top {TOP_K}"
    )
    print(f"machine: {machine()}")
    print(f"default strategy: {default}")
    header = f"{'variant':<44} {'P@10':>7} {'R@10':>7} {'nDCG@10':>8} {'MAP':>7} {'MAP@10':>7} {'cov@10':>7} {'ms/user':>8}"
    print(header)
    print("-" * len(header))

    def row(name: str, strategy: Strategy) -> Scores:
        s = evaluate(matrix, test, strategy)
        print(
            f"{name:<44} {s.precision:7.4f} {s.recall:7.4f} {s.ndcg:8.4f} {s.map:7.4f} "
            f"{s.map_at_k:7.4f} {s.coverage:7.4f} {s.seconds_per_user * 1000:8.2f}"
        )
        return s

    # Everyone below `min_ratings` gets the popular list: a huge threshold is the baseline.
    row("popularity baseline (Bayesian average)", replace(default, min_ratings=10**9))
    row("popularity baseline (most rated)", replace(default, min_ratings=10**9, prior_votes=1e9))
    variants = {
        "binary sim, binary votes": (True, True),
        "binary sim, score votes": (True, False),
        "score sim, binary votes": (False, True),
        "score sim, score votes (sum sim*rating)": (False, False),
    }
    for name, (binary_sim, binary_votes) in variants.items():
        strategy = replace(default, binary_similarity=binary_sim, binary_votes=binary_votes)
        row(f"{name}, k={default.neighbours}", strategy)
    row(f"DEFAULT {default.neighbours}", default)

    ks = [5, 10, 20, 30, 40, 50, 60, 80, 100, 150, 200, 300]
    print("\nnDCG@10 against k (neighbours)")
    print(f"{'k':>5} {'binary/binary':>14} {'score/score':>12}")
    curves: dict[str, list[float]] = {"binary sim, binary votes": [], "score sim, score votes": []}
    for k in ks:
        b = evaluate(
            matrix, test, replace(default, neighbours=k, binary_similarity=True, binary_votes=True)
        )
        r = evaluate(
            matrix,
            test,
            replace(default, neighbours=k, binary_similarity=False, binary_votes=False),
        )
        curves["binary sim, binary votes"].append(b.ndcg)
        curves["score sim, score votes"].append(r.ndcg)
        print(f"{k:>5} {b.ndcg:14.4f} {r.ndcg:12.4f}")
    if args.plot:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(6, 3.5))
        for name, values in curves.items():
            ax.plot(ks, values, marker="o", label=name)
        ax.set_xscale("log")
        ax.set_xlabel("neighbours k")
        ax.set_ylabel("nDCG@10")
        ax.set_title("MovieLens-100K, stratified 75/25 split")
        ax.grid(alpha=0.3)
        ax.legend()
        fig.tight_layout()
        args.plot.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(args.plot, dpi=120)
        print(f"saved {args.plot}")


if __name__ == "__main__":
    main()
