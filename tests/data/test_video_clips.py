"""Clip discovery (GOPRO and DVD layouts) and the clip pipeline of tfdeblur.data.clips."""

import numpy as np
import pytest

from tfdeblur.data import DatasetError, clip_dataset, find_clips
from tfdeblur.data.clips import clip_windows
from tfdeblur.data.image_io import write_image

H, W = 24, 30


def frame_pixels(index, sharp):
    """Channel 0 = row, 1 = column (so a crop/flip shows), 2 = frame index (+100 if sharp)."""
    rows, cols = np.meshgrid(np.arange(H), np.arange(W), indexing="ij")
    image = np.stack([rows, cols, np.full((H, W), index + (100 if sharp else 0))], -1)
    return image.astype(np.float32) / 255


def write_sequence(folder, blur_dir, sharp_dir, names, start=0):
    for k, name in enumerate(names):
        write_image(folder / blur_dir / name, frame_pixels(start + k, False))
        write_image(folder / sharp_dir / name, frame_pixels(start + k, True))


@pytest.fixture(scope="module")
def gopro(tmp_path_factory):
    root = tmp_path_factory.mktemp("gopro")
    # Names sort differently as text and as numbers: 2 < 10 only "naturally".
    write_sequence(root / "train" / "seq_b", "blur", "sharp", ["1.png", "2.png", "10.png"], 0)
    write_sequence(
        root / "train" / "seq_a", "blur", "sharp", [f"{i:06d}.png" for i in range(1, 6)], 20
    )
    write_sequence(root / "test" / "seq_c", "blur", "sharp", ["000001.png", "000002.png"], 40)
    return root


def test_gopro_sequences_in_natural_order(gopro):
    sequences = find_clips(gopro, "train")
    assert [s[0].name.split("/")[0] for s in sequences] == ["seq_a", "seq_b"]
    assert [p.name for p in sequences[1]] == ["seq_b/1.png", "seq_b/2.png", "seq_b/10.png"]
    assert [p.blur.parent.name for p in sequences[0]] == ["blur"] * 5
    assert [p.sharp.parent.name for p in sequences[0]] == ["sharp"] * 5
    assert len(find_clips(gopro, "test", layout="gopro")) == 1


def test_dvd_layout_with_and_without_splits(tmp_path):
    write_sequence(tmp_path / "IMG_0003", "input", "GT", ["00000.jpg", "00001.jpg"], 0)
    write_sequence(tmp_path / "720p_240fps_1", "input", "GT", ["00000.jpg"], 5)
    sequences = find_clips(tmp_path, "test")  # no split folders: the whole root
    assert [s[0].name for s in sequences] == ["720p_240fps_1/00000.jpg", "IMG_0003/00000.jpg"]
    assert sequences[1][1].blur == tmp_path / "IMG_0003" / "input" / "00001.jpg"
    assert sequences[1][1].sharp == tmp_path / "IMG_0003" / "GT" / "00001.jpg"

    split_root = tmp_path / "split"
    write_sequence(split_root / "train" / "v1", "input", "GT", ["a.png"], 0)
    write_sequence(split_root / "test" / "v2", "input", "GT", ["a.png"], 0)
    assert [s[0].name for s in find_clips(split_root, "test", layout="dvd")] == ["v2/a.png"]


def test_discovery_errors_name_the_problem(tmp_path, gopro):
    with pytest.raises(FileNotFoundError, match="missing"):
        find_clips(tmp_path / "missing")
    with pytest.raises(ValueError, match="layout"):
        find_clips(gopro, layout="vimeo")
    with pytest.raises(ValueError, match="blur_key"):
        find_clips(gopro, blur_key="input")
    with pytest.raises(FileNotFoundError, match="val"):
        find_clips(gopro, "val", layout="gopro")
    broken = tmp_path / "broken"
    write_sequence(broken / "v", "input", "GT", ["0.png", "1.png"])
    (broken / "v" / "GT" / "1.png").unlink()
    with pytest.raises(DatasetError, match="1.png"):
        find_clips(broken)
    (broken / "w").mkdir()
    (broken / "w" / "input").mkdir()
    with pytest.raises(DatasetError, match="GT"):
        find_clips(broken, layout="dvd")


def test_windows_of_consecutive_frames(gopro):
    sequences = find_clips(gopro, "train")  # 5 and 3 frames
    assert len(clip_windows(sequences, 3)) == 3 + 1
    assert len(clip_windows(sequences, 3, stride=2)) == 2 + 1
    assert len(clip_windows(sequences, 4)) == 2
    with pytest.raises(ValueError, match="longest"):
        clip_windows(sequences, 6)
    with pytest.raises(ValueError, match="clip_length"):
        clip_windows(sequences, 0)


def test_clip_dataset_shares_crop_and_flips_across_frames(gopro):
    sequences = find_clips(gopro, "train")
    ds = clip_dataset(sequences, 3, batch_size=2, patch_size=16, seed=0)
    batches = list(ds.take(6).as_numpy_iterator())
    seen_flips = set()
    for blur, sharp in batches:
        assert blur.shape == sharp.shape == (2, 3, 16, 16, 3)
        blur, sharp = np.rint(blur * 255), np.rint(sharp * 255)
        for clip_blur, clip_sharp in zip(blur, sharp, strict=True):
            # One window and flips for all frames and for blurry and sharp alike.
            np.testing.assert_array_equal(clip_blur[..., :2], clip_blur[:1, ..., :2].repeat(3, 0))
            np.testing.assert_array_equal(clip_sharp[..., :2], clip_blur[..., :2])
            np.testing.assert_array_equal(clip_sharp[..., 2], clip_blur[..., 2] + 100)
            # Consecutive frames of one sequence, in order.
            index = clip_blur[:, 0, 0, 2]
            np.testing.assert_array_equal(np.diff(index), 1)
            assert index[0] in (20, 21, 22, 0)
            # A contiguous 16x16 window of the frame, possibly flipped.
            rows, cols = clip_blur[0, :, 0, 0], clip_blur[0, 0, :, 1]
            assert abs(np.diff(rows)).tolist() == [1] * 15
            assert abs(np.diff(cols)).tolist() == [1] * 15
            seen_flips.add((rows[1] < rows[0], cols[1] < cols[0]))
    assert len(seen_flips) > 1  # flips happen
    again = next(clip_dataset(sequences, 3, 2, 16, seed=0).as_numpy_iterator())
    np.testing.assert_array_equal(again[0], batches[0][0])


def test_clip_dataset_skip_continues_the_stream(gopro):
    # A resumed run skips the clips already drawn: its batch i is batch k + i of the
    # uninterrupted stream (same windows, crops and flips).
    sequences = find_clips(gopro, "train")
    full = list(clip_dataset(sequences, 3, 2, 16, seed=3).take(5).as_numpy_iterator())
    resumed = list(clip_dataset(sequences, 3, 2, 16, seed=3, skip=3 * 2).take(2))
    for (blur, sharp), (want_blur, want_sharp) in zip(resumed, full[3:], strict=True):
        np.testing.assert_array_equal(blur.numpy(), want_blur)
        np.testing.assert_array_equal(sharp.numpy(), want_sharp)
    with pytest.raises(ValueError, match="skip"):
        clip_dataset(sequences, 3, 2, 16, skip=-1)


def test_clip_dataset_rejects_bad_sizes(gopro):
    sequences = find_clips(gopro, "train")
    with pytest.raises(ValueError, match="batch_size"):
        clip_dataset(sequences, 3, batch_size=5, patch_size=8, repeat=False)
    with pytest.raises(ValueError, match="patch_size"):
        clip_dataset(sequences, 3, batch_size=1, patch_size=0)
