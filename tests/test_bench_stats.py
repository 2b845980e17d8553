import math

import pytest

from mobileclip_deploy.bench import stats


def test_summary_matches_hand_computed_values():
    samples = [float(x) for x in range(1, 11)]  # 1..10
    s = stats.summarize(samples)
    assert s["median"] == 5.5 and s["mean"] == 5.5
    assert s["min"] == 1.0 and s["max"] == 10.0
    assert s["p90"] == pytest.approx(9.1)  # numpy 'linear': 1 + 0.9 * 9
    assert s["trimmed_mean"] == pytest.approx(sum(range(2, 10)) / 8)  # drops 1 and 10
    assert s["stdev"] == pytest.approx(math.sqrt(sum((x - 5.5) ** 2 for x in samples) / 9))


def test_trimmed_mean_ignores_outliers_that_move_the_mean():
    samples = [10.0] * 18 + [1000.0, 0.001]
    assert stats.trimmed_mean(samples) == 10.0
    assert sum(samples) / len(samples) > 50


@pytest.mark.parametrize("n, cut", [(1, 0), (9, 0), (10, 1), (19, 1), (20, 2), (30, 3), (55, 5), (1000, 100)])
def test_trimmed_mean_drops_n_div_10_at_each_end_like_the_swift_runner(n, cut):
    # Skewed samples, so dropping one sample too few or too many changes the result.
    samples = [float(i * i) for i in range(n)][::-1]
    kept = sorted(samples)[cut : n - cut]
    assert stats.trimmed_mean(samples) == pytest.approx(sum(kept) / len(kept))


def test_trimmed_mean_of_ten_drops_the_extremes():
    assert stats.trimmed_mean([1.0, 2, 3, 4, 5, 6, 7, 8, 9, 100]) == pytest.approx(5.5)


def test_percentile_agrees_with_numpy():
    np = pytest.importorskip("numpy")
    xs = [3.2, 1.0, 7.5, 2.2, 9.9, 4.4, 6.1]
    for q in (0, 10, 50, 90, 100):
        assert stats.percentile(xs, q) == pytest.approx(float(np.percentile(xs, q)))


def test_single_sample_and_errors():
    s = stats.summarize([4.0])
    assert s == {"median": 4.0, "mean": 4.0, "trimmed_mean": 4.0, "p90": 4.0, "min": 4.0, "max": 4.0, "stdev": None}
    with pytest.raises(ValueError):
        stats.summarize([])
    with pytest.raises(ValueError):
        stats.percentile([1.0], 101)
