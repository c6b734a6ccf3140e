"""The evaluation's figures on inputs whose answers are known: bootstrap intervals, style similarity to the
author's held-out passages, and the authorship check on real-looking writing."""

from __future__ import annotations

import math

import numpy as np
import pytest

from twin.evaluation.metrics import AuthorshipClassifier, bootstrap_mean, centroid_similarity, cosine_rows


def test_bootstrap_interval_holds_the_mean_and_narrows_with_more_data() -> None:
    rng = np.random.default_rng(1)
    few, many = rng.normal(0.2, 0.1, 8), rng.normal(0.2, 0.1, 400)
    small, large = bootstrap_mean(few), bootstrap_mean(many)
    assert small.low <= small.mean <= small.high and large.low <= large.mean <= large.high
    assert large.high - large.low < small.high - small.low
    assert large.low < 0.2 < large.high
    with pytest.raises(ValueError):
        bootstrap_mean([])


def test_centroid_similarity_scores_closeness_to_the_passages_as_a_whole() -> None:
    # Two passages about the x axis, one a little off it: an answer along x reads like them, one along y not.
    passages = [[1.0, 0.0, 0.0], [2.0, 0.2, 0.0]]
    along_x, along_y, opposite = centroid_similarity([[3.0, 0.0, 0.0], [0.0, 1.0, 0.0], [-1.0, 0.0, 0.0]], passages)
    assert along_x > 0.99 and 0.0 < along_y < 0.1 and opposite < -0.99
    # Each passage weighs the same whatever its length (vectors are normalised before the mean).
    assert math.isclose(centroid_similarity([[1.0, 1.0]], [[1.0, 0.0], [0.0, 100.0]])[0], 1.0, rel_tol=1e-9)
    assert cosine_rows([[1.0, 0.0]], [[0.0, 2.0]]) == [0.0]
    with pytest.raises(ValueError):
        centroid_similarity([[1.0, 0.0]], [])


AUTHOR = [
    "I keep coming back to the same lesson: a backfill you cannot rerun is a backfill you will regret. "
    "Write the partition, then the marker, never the other way round.",
    "Honestly, most of our pipeline incidents were not clever. Somebody reran a job, and it appended instead "
    "of overwriting. So now every write is keyed, and I sleep better.",
    "Here is the rule I give every new hire: if you cannot explain what a rerun does, you do not get to "
    "schedule it. Idempotence is not a nice-to-have.",
    "I measured it twice, because I did not believe it the first time: the merge was cheaper than the "
    "delete-and-insert, by a factor of three.",
]
OTHERS = [
    "The attention kernel is memory-bound at these sequence lengths; fusing the softmax into the matmul "
    "removes two round trips to HBM.",
    "We evaluate perplexity on a held-out shard of 10k documents, with the tokenizer frozen since step zero.",
    "Quantising the KV cache to eight bits halves its footprint, and the quality loss stays within noise on "
    "our benchmarks.",
    "Speculative decoding pays off when the draft model agrees with the target most of the time; below "
    "sixty percent acceptance it does not.",
]


def test_authorship_check_attributes_unseen_writing_to_the_right_author() -> None:
    classifier = AuthorshipClassifier(AUTHOR, OTHERS)
    hers = "Honestly, I would rerun the backfill before trusting it: key every write, then write the marker."
    theirs = "Fusing the kernel keeps the activations in on-chip memory, which matters at long sequence lengths."
    assert classifier.author_share([hers]) == 1.0 and classifier.author_share([theirs]) == 0.0
    assert classifier.training_sizes == {"author": 4, "others": 4}
    with pytest.raises(ValueError):
        AuthorshipClassifier(AUTHOR, [])
