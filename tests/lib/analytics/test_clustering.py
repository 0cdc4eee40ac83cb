import numpy as np
import pytest

from emo_assets.lib.analytics.clustering import (
    ClusterModel,
    assign_clusters,
    fit_cluster_model,
    load_cluster_model,
    save_cluster_model,
)

DIM = 8


# Tests that are not about choosing k try few k values: every k is n_init KMeans fits.
FEW_K = range(2, 4)


def blobs(k: int, per_blob: int = 15, dim: int = DIM, seed: int = 0) -> tuple[np.ndarray, ...]:
    """``k`` tight blobs around orthogonal directions (well separated in cosine geometry)."""
    rng = np.random.default_rng(seed)
    centres = np.eye(dim, dtype=np.float32)[:k] * 5.0
    truth = np.repeat(np.arange(k), per_blob)
    x = centres[truth] + rng.normal(scale=0.05, size=(len(truth), dim)).astype(np.float32)
    return x.astype(np.float32), truth


def same_partition(a: np.ndarray, b: np.ndarray) -> bool:
    """True when two labelings group the rows identically, whatever the cluster numbers."""
    pairs = set(zip(a.tolist(), b.tolist()))
    return len(pairs) == len(set(a.tolist())) == len(set(b.tolist()))


@pytest.mark.parametrize("k", [2, 3, 5])
def test_k_is_chosen_on_well_separated_blobs(k):
    x, truth = blobs(k)
    model = fit_cluster_model(x, "tiny", seed=0)
    assert model.k == k
    assert model.silhouette is not None and model.silhouette > 0.8
    assert model.n_fit == len(x) and model.embed_dim == DIM and model.model_id == "tiny"
    assert [k_ for k_, _ in model.silhouette_by_k] == list(range(2, 9))
    cluster_id, _, _ = assign_clusters(model, x)
    assert same_partition(cluster_id, truth)


def test_same_seed_gives_identical_results():
    x, _ = blobs(3)
    rng = np.random.default_rng(1)
    noisy = x + rng.normal(scale=1.0, size=x.shape).astype(np.float32)
    a = fit_cluster_model(noisy, "tiny", FEW_K, seed=7)
    b = fit_cluster_model(noisy, "tiny", FEW_K, seed=7)
    assert (a.k, a.silhouette, a.silhouette_by_k) == (b.k, b.silhouette, b.silhouette_by_k)
    for got_a, got_b in zip(assign_clusters(a, noisy), assign_clusters(b, noisy)):
        np.testing.assert_array_equal(got_a, got_b)


def test_assign_output_types_and_distances():
    x, _ = blobs(2)
    model = fit_cluster_model(x, "tiny", FEW_K)
    cluster_id, pca_xy, distance = assign_clusters(model, x)
    assert cluster_id.dtype == np.int32 and cluster_id.shape == (len(x),)
    assert pca_xy.dtype == np.float32 and pca_xy.shape == (len(x), 2)
    assert distance.dtype == np.float32 and distance.shape == (len(x),)
    # Unit vectors: distance to a centroid inside the unit ball is at most 2; tight blobs are close.
    assert (distance >= 0).all() and distance.max() < 0.1
    # Two blobs on orthogonal axes separate on the first principal component.
    assert np.sign(pca_xy[cluster_id == 0, 0]).std() == 0
    assert np.sign(pca_xy[cluster_id == 0, 0][0]) != np.sign(pca_xy[cluster_id == 1, 0][0])


def test_scale_does_not_matter_cosine_geometry():
    x, _ = blobs(3)
    model = fit_cluster_model(x, "tiny", FEW_K)
    scaled = x * np.linspace(0.1, 100, len(x), dtype=np.float32)[:, None]
    for got, expected in zip(assign_clusters(model, scaled), assign_clusters(model, x)):
        np.testing.assert_allclose(got, expected, atol=1e-5)


def test_does_not_mutate_input():
    x, _ = blobs(2)
    before = x.copy()
    model = fit_cluster_model(x, "tiny", FEW_K)
    assign_clusters(model, x)
    np.testing.assert_array_equal(x, before)


def test_no_rows_is_a_clear_error():
    with pytest.raises(ValueError, match="no embeddings"):
        fit_cluster_model(np.zeros((0, DIM), np.float32), "tiny")


@pytest.mark.parametrize("n", [1, 2])
def test_fewer_than_three_rows_is_one_cluster(n):
    x = np.random.default_rng(0).normal(size=(n, DIM)).astype(np.float32)
    model = fit_cluster_model(x, "tiny", FEW_K)
    assert model.k == 1 and model.silhouette is None
    cluster_id, pca_xy, distance = assign_clusters(model, x)
    np.testing.assert_array_equal(cluster_id, np.zeros(n, np.int32))
    assert np.isfinite(pca_xy).all() and np.isfinite(distance).all()


def test_identical_points_are_one_cluster():
    x = np.tile(np.arange(DIM, dtype=np.float32), (10, 1))
    model = fit_cluster_model(x, "tiny", FEW_K)
    assert model.k == 1 and model.silhouette is None and model.pca_components is None
    cluster_id, pca_xy, distance = assign_clusters(model, x)
    assert (cluster_id == 0).all()
    np.testing.assert_array_equal(pca_xy, np.zeros((10, 2), np.float32))
    np.testing.assert_allclose(distance, 0, atol=1e-6)


def test_k_is_capped_by_rows_and_distinct_points():
    # Three distinct directions, each repeated: k cannot exceed 3.
    x = np.repeat(np.eye(3, DIM, dtype=np.float32), 4, axis=0)
    model = fit_cluster_model(x, "tiny", k_range=range(2, 9))
    assert model.k == 3
    assert max(k for k, _ in model.silhouette_by_k) == 3


def test_one_dimensional_embeddings_pad_the_projection():
    x = np.array([[1.0], [2.0], [-1.0], [-3.0]], np.float32)
    model = fit_cluster_model(x, "tiny", FEW_K)
    assert model.k == 2
    _, pca_xy, _ = assign_clusters(model, x)
    assert pca_xy.shape == (4, 2) and (pca_xy[:, 1] == 0).all()


def test_width_mismatch_names_both_widths_and_the_remedy():
    x, _ = blobs(2)
    model = fit_cluster_model(x, "tiny", FEW_K)
    with pytest.raises(ValueError, match=r"(?s)4-wide.*8-wide.*emotion_cluster_model"):
        assign_clusters(model, np.zeros((3, 4), np.float32))


def test_non_finite_embeddings_are_refused():
    x, _ = blobs(2)
    x[0, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        fit_cluster_model(x, "tiny")


def test_assign_zero_rows():
    x, _ = blobs(2)
    model = fit_cluster_model(x, "tiny", FEW_K)
    cluster_id, pca_xy, distance = assign_clusters(model, np.zeros((0, DIM), np.float32))
    assert cluster_id.shape == (0,) and pca_xy.shape == (0, 2) and distance.shape == (0,)


def test_save_load_round_trip(tmp_path):
    x, _ = blobs(3)
    model = fit_cluster_model(x, "tiny", FEW_K)
    path = tmp_path / "models" / "emotion_cluster_model.pkl"
    save_cluster_model(model, path)
    save_cluster_model(model, path)  # overwriting is fine
    loaded = load_cluster_model(path)
    assert isinstance(loaded, ClusterModel)
    assert (loaded.k, loaded.silhouette, loaded.model_id) == (model.k, model.silhouette, "tiny")
    for got, expected in zip(assign_clusters(loaded, x), assign_clusters(model, x)):
        np.testing.assert_array_equal(got, expected)
    assert [p.name for p in path.parent.iterdir()] == [path.name]  # no temp files left


def test_load_missing_file_says_what_to_do(tmp_path):
    with pytest.raises(FileNotFoundError, match="emotion_cluster_model"):
        load_cluster_model(tmp_path / "nope.pkl")


def test_assignment_matches_scikit_learn_predict_and_transform():
    from sklearn.cluster import KMeans
    from sklearn.decomposition import PCA

    rng = np.random.default_rng(3)
    x = np.concatenate([rng.normal(c, 0.3, size=(40, 16)) for c in (-2.0, 0.0, 2.0)]).astype(np.float32)
    model = fit_cluster_model(x, model_id="m", k_range=range(3, 4), seed=0)
    ids, xy, distance = assign_clusters(model, x)
    xn = x / np.linalg.norm(x, axis=1, keepdims=True)
    km = KMeans(n_clusters=3, n_init=10, random_state=0).fit(xn)
    np.testing.assert_array_equal(ids, km.predict(xn))
    np.testing.assert_allclose(
        xy, PCA(n_components=2, svd_solver="full", random_state=0).fit(xn).transform(xn), atol=1e-5
    )
    np.testing.assert_allclose(distance, np.linalg.norm(xn - km.cluster_centers_[ids], axis=1), atol=1e-5)


def _embedding_rows(x: np.ndarray, ids: list[str], days: list, model_id: str = "tiny"):
    import pyarrow as pa

    return pa.table(
        {
            "audio_id": ids,
            "date": pa.array(days, pa.date32()),
            "model_id": [model_id] * len(ids),
            "embedding": pa.array(x.tolist(), pa.list_(pa.float32(), x.shape[1])),
        }
    )


def test_fit_clusters_counts_each_recording_once():
    """The same recordings landed on three days: one point each, as if they had landed once."""
    import datetime as dt

    from emo_assets.lib.analytics.clustering import fit_clusters

    x, _ = blobs(3)
    ids = [f"r{i:02d}" for i in range(len(x))]
    days = [dt.date(2026, 11, 28 + d) for d in range(3)]
    once = fit_clusters(_embedding_rows(x, ids, [days[0]] * len(x)))
    thrice = fit_clusters(_embedding_rows(np.tile(x, (3, 1)), ids * 3, [d for d in days for _ in ids]))
    assert thrice.model.n_fit == len(x) and thrice.stats["n_recordings"] == len(x)
    assert thrice.stats["n_embedding_rows"] == 3 * len(x)
    assert thrice.model.silhouette == once.model.silhouette and thrice.model.k == once.model.k
    assert thrice.model_version == once.model_version  # the same fit, the same version


def test_cluster_rows_carry_the_model_version_and_skip_other_models():
    import datetime as dt

    import pyarrow as pa

    from emo_assets.lib.analytics.clustering import cluster_rows, fit_clusters

    x, _ = blobs(3)
    ids = [f"r{i:02d}" for i in range(len(x))]
    day = dt.date(2026, 11, 28)
    fitted = fit_clusters(_embedding_rows(x, ids, [day] * len(x)))
    other = _embedding_rows(x[:2], ["o1", "o2"], [day, day], model_id="base")
    rows = cluster_rows(fitted, pa.concat_tables([_embedding_rows(x, ids, [day] * len(x)), other]))
    assert rows.column("audio_id").to_pylist() == ids
    assert rows.column("model_version").to_pylist() == [fitted.model_version] * len(x)
    np.testing.assert_array_equal(rows.column("cluster_id").to_numpy(), assign_clusters(fitted.model, x)[0])
