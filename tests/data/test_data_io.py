import numpy as np
import pytest

from medvlp.data.io import (CT_WINDOWS, load_npz, named_window, read_dicom, read_image,
                            read_nifti, window)
from medvlp.data.root import bundled_dir
from medvlp.errors import DataError

CT_DCM = "dicom/tcga_luad_ID_0000_AGE_0060_CONTRAST_1_CT.dcm"
CR_DCM = "dicom/nema_wg04_RG1_J2KI_chest_cr.dcm"


def test_corrupt_png_error_names_file(tmp_path):
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n" + b"garbage" * 20)
    with pytest.raises(DataError, match="broken.png"):
        read_image(bad)


def test_truncated_png_error_names_file(tmp_path):
    from PIL import Image

    good = tmp_path / "good.png"
    Image.fromarray(np.arange(64 * 64, dtype=np.uint8).reshape(64, 64)).save(good)
    data = good.read_bytes()
    (tmp_path / "cut.png").write_bytes(data[: len(data) // 2])
    assert read_image(good).shape == (64, 64)
    with pytest.raises(DataError, match="cut.png"):
        read_image(tmp_path / "cut.png")


def test_truncated_npz_error_names_file_and_keys(tmp_path):
    src = bundled_dir() / "breastmnist.npz"
    cut = tmp_path / "half.npz"
    cut.write_bytes(src.read_bytes()[: src.stat().st_size // 2])
    with pytest.raises(DataError) as e:
        load_npz(cut, ["train_images", "train_labels"])
    assert str(cut) in str(e.value) and "train_images" in str(e.value)


def test_npz_missing_key_named(tmp_path):
    p = tmp_path / "x.npz"
    np.savez(p, a=np.zeros(3))
    with pytest.raises(DataError, match=r"x\.npz.*missing key\(s\) b"):
        load_npz(p, ["a", "b"])
    assert load_npz(p, ["a"])["a"].shape == (3,)


def test_dicom_ct_hounsfield_units(shared_data):
    pydicom = pytest.importorskip("pydicom")
    path = shared_data / CT_DCM
    hu = read_dicom(path)
    ds = pydicom.dcmread(path)
    ref = ds.pixel_array.astype(np.float32) * float(ds.RescaleSlope) + float(ds.RescaleIntercept)
    np.testing.assert_array_equal(hu, ref)
    assert hu.dtype == np.float32 and hu.shape == (512, 512)
    # Air outside the body is about -1000 HU; the field of view contains tissue up to bone.
    assert -1100 <= np.percentile(hu, 5) <= -900
    assert hu.max() > 300 and hu.min() >= -3100


def test_dicom_without_pixel_data_error(shared_data, tmp_path):
    pydicom = pytest.importorskip("pydicom")
    ds = pydicom.dcmread(shared_data / CT_DCM)
    del ds.PixelData
    out = tmp_path / "no_pixels.dcm"
    ds.save_as(out)
    with pytest.raises(DataError, match=r"no_pixels\.dcm: has no pixel data"):
        read_dicom(out)


def test_dicom_monochrome1_is_inverted(shared_data):
    pydicom = pytest.importorskip("pydicom")
    path = shared_data / CR_DCM
    ds = pydicom.dcmread(path)
    assert ds.PhotometricInterpretation == "MONOCHROME1"
    try:
        raw = ds.pixel_array.astype(np.float32)
    except Exception as e:  # decoder for JPEG 2000 missing in this environment
        pytest.skip(f"JPEG 2000 decoder not available for {path.name}: {e}")
    img = read_dicom(path)
    assert img.shape == (1955, 1841)
    np.testing.assert_array_equal(img, raw.min() + raw.max() - raw)
    # Inverted: the brightest raw pixel (darkest on a MONOCHROME1 display) is now the darkest.
    assert img.flat[np.argmax(raw)] == img.min()


def test_nifti_wrong_rank_error(tmp_path):
    nib = pytest.importorskip("nibabel")
    p = tmp_path / "flat.nii.gz"
    nib.save(nib.Nifti1Image(np.zeros((8, 9), np.float32), np.eye(4)), str(p))
    with pytest.raises(DataError) as e:
        read_nifti(p, ndim=3)
    assert "flat.nii.gz" in str(e.value) and "rank 2" in str(e.value) and "rank 3" in str(e.value)
    vol, aff = read_nifti(p, ndim=2)
    assert vol.shape == (8, 9) and aff.shape == (4, 4)


def test_window_formula_and_named_windows():
    hu = np.array([-2000, -1350, -600, 150, 3000], dtype=np.int16)
    np.testing.assert_allclose(window(hu, -600, 1500), [0, 0, 0.5, 1, 1])
    np.testing.assert_allclose(named_window(hu, "lung"), window(hu, -600, 1500))
    assert CT_WINDOWS["bone"] == (400, 1800) and CT_WINDOWS["mediastinum"] == (40, 400)
    with pytest.raises(ValueError, match="known"):
        named_window(hu, "brain")
