"""The predictions file's optional p(z) HDUs (PZ, PZ_GRID): round trip, contract checks on write and read."""

from __future__ import annotations

import numpy as np
import pytest
from astropy.io import fits
from astropy.table import Table

from csstz.errors import FileFormatError, InputError
from csstz.io.predictions import PZ_WRITE_BLOCK, PzSpool, read_predictions, select_rows, write_predictions
from csstz.templates import pdf

GRID = np.linspace(0.0, 1.6, 801)


def _table(n=4):
    tab = Table()
    tab["TARGETID"] = np.arange(10, 10 + n)
    tab["Z"] = np.linspace(0.2, 1.2, n)
    tab["ZERR"] = np.full(n, 0.01)
    tab["ZWARN"] = np.zeros(n, np.int32)
    pz = pdf.normalise(np.exp(-0.5 * ((GRID[None] - np.asarray(tab["Z"])[:, None]) / 0.01) ** 2), GRID)
    return tab, pz


def test_round_trip_and_row_selection(tmp_path):
    tab, pz = _table()
    tab["ZWARN"][3] = 1 << 1
    pz[3] = np.nan  # a flagged object without a result
    path = tmp_path / "p.fits"
    write_predictions(path, tab, header={"METHOD": "test"}, pz=pz, pz_grid=GRID)
    with fits.open(path) as hdul:
        assert hdul["PZ"].data.dtype == np.dtype(">f4") and hdul["PZ"].data.shape == (4, GRID.size)
        assert hdul["PZ_GRID"].data.dtype == np.dtype(">f8")
    back = read_predictions(path)
    np.testing.assert_array_equal(back.meta["PZ_GRID"], GRID)
    np.testing.assert_array_equal(back.meta["PZ"], pz.astype(np.float32))
    assert back.meta["METHOD"] == "test"
    # carried in meta: writing the read table again keeps it; a selection keeps rows aligned
    write_predictions(tmp_path / "q.fits", back)
    assert np.array_equal(read_predictions(tmp_path / "q.fits").meta["PZ"], back.meta["PZ"], equal_nan=True)
    sub = select_rows(back, [2, 0])
    np.testing.assert_array_equal(sub.meta["PZ"], back.meta["PZ"][[2, 0]])
    write_predictions(tmp_path / "s.fits", sub)
    # a file without p(z) reads as before
    plain = tmp_path / "plain.fits"
    write_predictions(plain, _table()[0])
    assert "PZ" not in read_predictions(plain).meta


@pytest.mark.parametrize(
    "case,match",
    [
        ("shape", r"PZ: shape does not match.*\(3, 801\)"),
        ("grid", r"PZ_GRID, row 5: must be strictly increasing"),
        ("negative", r"PZ, row 1: negative density"),
        ("norm", r"PZ, row 2: row not normalised.*got 1\.5"),
        ("nan_unflagged", r"PZ, row 0: non-finite density"),
        ("half", r"PZ_GRID: PZ and PZ_GRID go together"),
    ],
)
def test_bad_pz_is_refused_with_one_line_and_nothing_written(tmp_path, case, match):
    tab, pz = _table(3)
    grid = GRID.copy()
    if case == "shape":
        pz = pz[:, :-1]
        grid = GRID
    elif case == "grid":
        grid[5] = grid[4]
    elif case == "negative":
        pz[1, 7] = -0.1
    elif case == "norm":
        pz[2] *= 1.5
    elif case == "nan_unflagged":
        pz[0] = np.nan
    path = tmp_path / "bad.fits"
    with pytest.raises(InputError, match=match) as err:
        if case == "shape":
            write_predictions(path, tab, pz=pz, pz_grid=grid)
        elif case == "half":
            write_predictions(path, tab, pz=pz)
        else:
            write_predictions(path, tab, pz=pz, pz_grid=grid)
    assert "\n" not in str(err.value) and not path.exists()


def _many(n):
    z = np.linspace(0.05, 1.5, n)
    tab = Table({"TARGETID": np.arange(n), "Z": z, "ZERR": np.full(n, 0.01), "ZWARN": np.zeros(n, np.int32)})
    pz = pdf.normalise(np.exp(-0.5 * ((GRID[None] - z[:, None]) / 0.01) ** 2), GRID)
    return tab, pz


def test_spooled_pz_streams_to_the_same_file_as_an_array(tmp_path):
    """A PzSpool filled block by block (as csstz predict does) writes the same PZ HDU as the whole array, over
    several write blocks, and its temporary file is gone afterwards."""
    n = 2 * PZ_WRITE_BLOCK + 37
    tab, pz = _many(n)
    write_predictions(tmp_path / "a.fits", tab, pz=pz, pz_grid=GRID)
    with PzSpool(GRID.size, tmp_path) as spool:
        for s in range(0, n, 300):
            spool.append(pz[s : s + 300])
        assert spool.shape == (n, GRID.size) and spool.path.is_file()
        write_predictions(tmp_path / "b.fits", tab, pz=spool, pz_grid=GRID)
    assert not spool.path.exists()
    with fits.open(tmp_path / "a.fits") as a, fits.open(tmp_path / "b.fits") as b:
        assert [h.name for h in b] == ["PRIMARY", "REDSHIFTS", "PZ", "PZ_GRID"]
        np.testing.assert_array_equal(b["PZ"].data, a["PZ"].data)
        np.testing.assert_array_equal(b["PZ"].data, pz.astype(np.float32))
        assert b["PZ"].header["BUNIT"] == "1/z"
    np.testing.assert_array_equal(read_predictions(tmp_path / "b.fits").meta["PZ"], pz.astype(np.float32))


def test_a_bad_row_late_in_the_stream_names_its_row_and_keeps_the_old_file(tmp_path):
    n = PZ_WRITE_BLOCK + 10
    tab, pz = _many(n)
    path = tmp_path / "p.fits"
    write_predictions(path, tab, pz=pz, pz_grid=GRID)
    before = path.read_bytes()
    pz[PZ_WRITE_BLOCK + 3, 5] = -1.0
    with PzSpool(GRID.size, tmp_path) as spool:
        spool.append(pz)
        with pytest.raises(InputError, match=rf"PZ, row {PZ_WRITE_BLOCK + 3}: negative density"):
            write_predictions(path, tab, pz=spool, pz_grid=GRID)
        with pytest.raises(InputError, match=r"PZ: spooled block has the wrong shape"):
            spool.append(pz[:2, :-1])
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["p.fits"]


def test_row_count_mismatch_and_a_damaged_file(tmp_path):
    tab, pz = _table(3)
    with pytest.raises(InputError, match=r"PZ: shape.*got \(2, 801\).*\(3, 801\)"):
        write_predictions(tmp_path / "x.fits", tab, pz=pz[:2], pz_grid=GRID)
    path = tmp_path / "ok.fits"
    write_predictions(path, tab, pz=pz, pz_grid=GRID)
    with fits.open(path) as hdul:  # a file whose PZ_GRID HDU was dropped
        fits.HDUList([h.copy() for h in hdul if h.name != "PZ_GRID"]).writeto(tmp_path / "half.fits")
    with pytest.raises(FileFormatError, match="HDU PZ_GRID missing"):
        read_predictions(tmp_path / "half.fits")


@pytest.mark.parametrize(
    "rows",
    [
        np.arange(3, 9),  # contiguous: one slice
        np.array([1, 4, 5, 11]),  # spread <= SPAN_READ_RATIO x: bounding slice
        np.array([0, 97]),  # sparse: point selection
        slice(2, 7),
    ],
)
def test_spectra_rows_read_any_way_equal_the_full_read(tmp_path, rows):
    """read_spectra picks slice, bounding slice or point selection; all give the rows of the full array."""
    from astropy.table import Table

    from csstz.io.spectra import BandSpectra, SpectraSet, read_spectra, write_spectra

    rng = np.random.default_rng(0)
    n, npix = 100, 12
    wave = np.linspace(6000.0, 9000.0, npix)
    flux = rng.normal(size=(n, npix)).astype(np.float32)
    err = rng.uniform(0.5, 1.0, size=(n, npix)).astype(np.float32)
    cat = Table({"TARGETID": np.arange(n, dtype=np.int64), "Z": rng.uniform(0, 1, n)})
    path = tmp_path / "s.h5"
    write_spectra(path, SpectraSet({"GI": BandSpectra(wave, flux, err)}, cat, {}))
    sp = read_spectra(path, rows=rows)
    np.testing.assert_array_equal(sp.bands["GI"].flux, flux[rows])
    np.testing.assert_array_equal(sp.bands["GI"].err, err[rows])
    np.testing.assert_array_equal(sp.catalog["TARGETID"], np.arange(n)[rows])
    bare = read_spectra(path, rows=rows, with_catalog=False)
    assert bare.catalog is None and len(bare) == len(sp)
    np.testing.assert_array_equal(bare.bands["GI"].flux, flux[rows])


def test_bounding_slice_is_read_in_pieces_that_skip_empty_ones(tmp_path, monkeypatch):
    """A spread selection is read piece by piece (memory of one piece); pieces without rows are skipped."""
    import h5py

    from csstz.io import spectra

    data = np.arange(40 * 3, dtype=np.float32).reshape(40, 3)
    with h5py.File(tmp_path / "d.h5", "w") as h5:
        h5["x"] = data
    rows = np.array([1, 4, 5, 11, 12, 30])  # span 30 <= SPAN_READ_RATIO x 6: the bounding-slice path
    monkeypatch.setattr(spectra, "READ_PIECE_ROWS", 3)
    reads = []
    with h5py.File(tmp_path / "d.h5", "r") as h5:

        class Spy:
            shape, dtype = h5["x"].shape, h5["x"].dtype

            def __getitem__(self, key):
                reads.append(key)
                return h5["x"][key]

        np.testing.assert_array_equal(spectra.read_rows(Spy(), rows), data[rows])
    assert all(isinstance(k, slice) and k.stop - k.start <= 3 for k in reads)
    assert [k.start for k in reads] == [1, 4, 10, 28]  # of the 10 pieces over [1, 31), those holding rows
