"""Preprocessing: colour layouts, resize modes, quantized fast paths, bad images."""
import struct

import cv2
import numpy as np
import pytest

from conftest import DATA, REPO
from edgeembed.errors import ImageError, InputError
from edgeembed.image_header import jpeg_size
from edgeembed.preprocess import InputFormat, Preprocessor, decode_image, jpeg_reduction, read_image, resize, to_rgb
from edgeembed.spec import Preprocessing

PARROT = DATA / "coral-images" / "parrot.jpg"


def test_colour_layouts_all_give_the_same_rgb():
    rgb = read_image(PARROT)
    bgr = rgb[:, :, ::-1]
    x = np.full(rgb.shape[:2] + (1,), 255, np.uint8)
    assert np.array_equal(to_rgb(bgr, "BGR"), rgb)
    assert np.array_equal(to_rgb(np.concatenate([rgb, x], 2), "RGBA"), rgb)
    assert np.array_equal(to_rgb(np.concatenate([bgr, x], 2), "BGRX"), rgb)  # picamera2 XRGB8888 memory order
    assert np.array_equal(to_rgb(np.concatenate([x, rgb], 2), "XRGB"), rgb)
    assert np.array_equal(to_rgb(rgb.astype(np.float32) / 255.0), rgb)
    gray = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
    assert to_rgb(gray).shape == rgb.shape and np.array_equal(to_rgb(gray)[:, :, 1], gray)


def test_bad_arrays_are_refused():
    with pytest.raises(InputError, match=r"\(H, W, 3\)"):
        to_rgb(np.zeros((4, 4, 5), np.uint8))
    with pytest.raises(InputError, match="color must be"):
        to_rgb(np.zeros((4, 4, 3), np.uint8), "CMYK")
    for image, color, match in ((np.zeros((4, 4, 3), np.uint8), None, "color must be"),
                                (np.zeros((4, 4, 4), np.uint8), "GRAY", "GRAY needs"),
                                (np.zeros((0, 10), np.uint8), "RGB", "empty"),
                                (np.zeros((2, 4, 4, 3), np.uint8), "RGB", r"got \(2, 4, 4, 3\)"),
                                (np.full((4, 4, 3), np.nan, np.float32), "RGB", "NaN"),
                                (np.full((4, 4, 3), -1.0), "RGB", "0..1 or 0..255, got -1..-1"),
                                (np.linspace(-2.1, 2.6, 48).reshape(4, 4, 3), "RGB", "normalisation"),
                                (np.linspace(-1, 1, 48).reshape(4, 4, 3), "RGB", "normalisation"),
                                (np.full((4, 4, 3), -3, np.int8), "RGB", r"int8\) must hold pixel values 0..255, got -3..-3"),
                                (np.full((4, 4, 3), 300, np.int32), "RGB", "0..255, got 300..300"),
                                (np.zeros((4, 4, 3), np.complex64), "RGB", "dtype complex64 is not a picture"),
                                (np.zeros((4, 4, 3), object), "RGB", "dtype object is not a picture")):
        with pytest.raises(InputError, match=match):
            to_rgb(image, color)
    # a cubic resize's overshoot is clipped, not refused, on 0..255 and on 0..1 pictures alike
    assert to_rgb(np.linspace(10.7, 265.4, 48, dtype=np.float32).reshape(4, 4, 3)).max() == 255
    rgb = read_image(PARROT)
    enlarged = cv2.resize(rgb, None, fx=1.5, fy=1.5, interpolation=cv2.INTER_CUBIC)
    unit = cv2.resize(rgb / 255.0, None, fx=1.5, fy=1.5, interpolation=cv2.INTER_CUBIC)
    assert unit.max() > 1.0  # the overshoot a 0..1 picture gets (1.09 here)
    assert np.abs(to_rgb(unit).astype(int) - enlarged).max() <= 1
    edge = cv2.resize(np.repeat([[0.0] * 4 + [1.0] * 4], 8, 0), (24, 24), interpolation=cv2.INTER_CUBIC)
    assert edge.min() < 0 and to_rgb(edge)[:, 0].max() == 0 and to_rgb(edge)[:, -1].min() == 255  # black to white
    # integer arrays of pixel values are pixels
    assert np.array_equal(to_rgb(rgb.astype(np.int64)), rgb) and np.array_equal(to_rgb(rgb.astype(np.int8) & 0x7F), rgb & 0x7F)


@pytest.mark.parametrize("mode", ["center_crop", "letterbox", "stretch"])
def test_resize_modes(mode):
    img = np.zeros((100, 200, 3), np.uint8)
    img[:, 50:150] = 255  # a white centre square
    out = resize(img, (64, 64), Preprocessing(resize=mode, mean=0, std=1))
    assert out.shape == (64, 64, 3)
    if mode == "center_crop":
        assert out.min() == 255  # the crop keeps only the centre square
    elif mode == "letterbox":
        assert out[0].max() == 0 and out[32, 32].min() == 255  # pads top/bottom with the mean (0)
    else:
        assert out[:, 0].max() == 0 and out[:, 32].min() == 255


def test_quantized_fast_paths_match_the_float_formula():
    batch = np.random.default_rng(1).integers(0, 256, (3, 8, 8, 3), dtype=np.uint8)
    cases = [(InputFormat(8, 8, np.dtype(np.uint8), 1 / 128, 128), Preprocessing(mean=128, std=128)),
             (InputFormat(8, 8, np.dtype(np.int8), 1 / 128, 0), Preprocessing(mean=128, std=128)),
             (InputFormat(8, 8, np.dtype(np.int8), 0.0187, -14), Preprocessing(mean=(123.7, 116.3, 103.5), std=(58.4, 57.1, 57.4)))]
    for fmt, pre in cases:
        out = Preprocessor(pre, fmt).normalize(batch)
        real = (batch.astype(np.float64) - np.array(pre.mean)) / np.array(pre.std)
        info = np.iinfo(fmt.dtype)
        want = np.clip(np.rint(real / fmt.scale + fmt.zero_point), info.min, info.max)
        assert out.dtype == fmt.dtype
        assert np.abs(out.astype(np.int32) - want).max() <= 1


def test_bgr_model_gets_bgr_channels():
    rgb = read_image(PARROT)
    p_rgb = Preprocessor(Preprocessing(mean=0, std=1), InputFormat(32, 32, np.dtype(np.float32)))
    p_bgr = Preprocessor(Preprocessing(mean=0, std=1, color_order="BGR"), InputFormat(32, 32, np.dtype(np.float32)))
    assert np.array_equal(p_rgb(rgb)[..., ::-1], p_bgr(rgb))


def test_bad_image_files(tmp_path):
    (tmp_path / "text.jpg").write_text("not an image")
    data = PARROT.read_bytes()
    (tmp_path / "cut.jpg").write_bytes(data[: len(data) // 2])
    with pytest.raises(ImageError, match="not found"):
        read_image(tmp_path / "missing.jpg")
    with pytest.raises(ImageError, match="not a readable image"):
        read_image(tmp_path / "text.jpg")
    with pytest.raises(ImageError, match="truncated JPEG"):
        read_image(tmp_path / "cut.jpg")
    # Bytes appended after the end-of-image marker (motion photos) are not truncation, even when the
    # appended video holds the bytes of a JPEG scan marker
    assert decode_image(data + b"trailer" * 10).shape == read_image(PARROT).shape
    motion = data + b"\x00\x00\x00\x18ftypmp42" + np.random.default_rng(0).bytes(300_000) + b"\xff\xda\x00\x08"
    assert decode_image(motion).shape == read_image(PARROT).shape
    ok, progressive = cv2.imencode(".jpg", cv2.imread(str(PARROT)), [cv2.IMWRITE_JPEG_PROGRESSIVE, 1])
    with pytest.raises(ImageError, match="truncated JPEG"):
        decode_image(progressive.tobytes()[: progressive.size // 2] + b"\x00" * 64)
    png = cv2.imencode(".png", cv2.imread(str(PARROT)))[1].tobytes()
    with pytest.raises(ImageError, match="truncated PNG"):
        decode_image(png[: len(png) // 2])
    heic = b"\x00\x00\x00\x18ftypheic" + bytes(200)  # an iPhone photo's header
    with pytest.raises(ImageError, match="HEIC photo.*convert it to JPEG"):
        decode_image(heic, "IMG_0001.HEIC")


def test_pictures_are_found_by_content_and_hidden_files_are_not(tmp_path):
    """Cameras and phones name pictures .jfif, .jpe or nothing; thumbnails hide in dot-folders."""
    from edgeembed.preprocess import is_image_file, list_images, still_images

    data = PARROT.read_bytes()
    for name in ("a.jfif", "b.jpe", "no_extension", "c.JPG"):
        (tmp_path / name).write_bytes(data)
    (tmp_path / ".thumbnails").mkdir()
    (tmp_path / ".thumbnails" / "t.jpg").write_bytes(data)
    (tmp_path / "._c.JPG").write_bytes(b"\x00\x05\x16\x07 AppleDouble")
    (tmp_path / "notes").write_text("not a picture")
    (tmp_path / "d.jpg.part").write_bytes(data[:1000])  # a download cut short: out of a folder walk
    assert [p.name for p in list_images(tmp_path, recursive=True)] == ["a.jfif", "b.jpe", "c.JPG", "no_extension"]
    assert still_images("http://192.168.1.20/video.cgi?res=640") is None  # a URL, not a glob
    assert still_images(tmp_path / "no_extension") == [tmp_path / "no_extension"]
    assert not is_image_file(tmp_path / "notes")
    assert read_image(tmp_path / "no_extension").shape == read_image(PARROT).shape


def _phone_photo(tmp_path, orientation: int | None = None, progressive: bool = False):
    """A real picture (imagenet-sample) enlarged to 4032x3024 (12 MP) and saved as a JPEG, optionally with the EXIF
    orientation a phone writes for a portrait photo (6: turn 90 degrees clockwise to view)."""
    src = sorted((DATA / "imagenet-sample").glob("*.jpg"))[7]
    big = cv2.resize(cv2.imread(str(src)), (4032, 3024), interpolation=cv2.INTER_CUBIC)
    params = [cv2.IMWRITE_JPEG_QUALITY, 90] + ([cv2.IMWRITE_JPEG_PROGRESSIVE, 1] if progressive else [])
    jpeg = cv2.imencode(".jpg", big, params)[1].tobytes()
    if orientation is not None:
        tiff = b"II*\x00\x08\x00\x00\x00\x01\x00" + struct.pack("<HHIHH", 0x0112, 3, 1, orientation, 0) + b"\x00" * 4
        payload = b"Exif\x00\x00" + tiff
        jpeg = jpeg[:2] + b"\xff\xe1" + (len(payload) + 2).to_bytes(2, "big") + payload + jpeg[2:]
    path = tmp_path / "photo.jpg"
    path.write_bytes(jpeg)
    return path, cv2.cvtColor(big, cv2.COLOR_BGR2RGB)


def test_a_large_jpeg_is_decoded_reduced_upright_and_gives_the_same_embedding(tmp_path):
    from edgeembed import Embedder

    path, upright = _phone_photo(tmp_path, orientation=6)
    data = path.read_bytes()
    assert jpeg_size(data) == (3024, 4032)  # as stored, before the EXIF turn
    with Embedder.create_from_model_path(REPO / "models" / "mobilenet_v2_1.0_224_int8.tflite", num_threads=1) as emb:
        pre = emb.preprocessor
        assert pre.keep_side == 672  # stretch to 224x224: three times the input side
        assert jpeg_reduction(data, pre.keep_side) == 4  # 3024 // 8 = 378 would be too small
        reduced = read_image(path, pre.keep_side)
        full = read_image(path)
        assert full.shape == (4032, 3024, 3) and reduced.shape == (1008, 756, 3)
        # both decodes are turned upright by the EXIF tag: the reduced one matches the turned picture
        turned = np.rot90(upright, -1)
        small = cv2.resize(turned, reduced.shape[1::-1], interpolation=cv2.INTER_AREA)
        assert np.abs(reduced.astype(int) - small).mean() < 4
        exact = cv2.resize(full, (224, 224), interpolation=cv2.INTER_AREA)  # the ideal: an area average of every pixel
        v_path = emb.embed(path).vector
        v_exact = emb.embed(exact).vector
        v_full = emb.embed(full).vector  # what reading in full gave before
        v_sideways = emb.embed(np.rot90(exact)).vector
        assert float(v_path @ v_exact) > 0.99 and float(v_path @ v_full) > 0.99
        assert float(v_path @ v_sideways) < float(v_path @ v_exact) - 0.05


def test_small_jpegs_other_formats_and_exact_interpolations_decode_in_full(tmp_path):
    small = (DATA / "imagenet-sample").glob("*.jpg").__next__().read_bytes()
    assert jpeg_reduction(small, 672) == 1  # 256 px short side
    path, _ = _phone_photo(tmp_path, progressive=True)
    assert jpeg_size(path.read_bytes()) == (3024, 4032)  # a progressive frame header (SOF2)
    assert jpeg_size(cv2.imencode(".png", np.zeros((8, 8, 3), np.uint8))[1].tobytes()) is None
    assert jpeg_size(path.read_bytes()[:40]) is None  # cut before its frame header
    assert jpeg_reduction(b"\xff\xd8\xff\xe0garbage", 672) == 1
    fmt = InputFormat(224, 224, np.dtype(np.uint8), 1.0, 0)
    assert Preprocessor(Preprocessing(interpolation="linear"), fmt).keep_side is None  # the model gets exactly linear
    cropped = Preprocessor(Preprocessing(resize="center_crop", crop_fraction=0.875), fmt)
    assert cropped.keep_side == 768  # the crop keeps 0.875 of the short side: 768 * 0.875 = 672
    assert read_image(path, cropped.keep_side).shape[:2] == (1512, 2016)  # 1/2: 3024 // 4 = 756 is short of 768
    assert read_image(path, 600).shape[:2] == (756, 1008)  # 1/4


def test_picture_sizes_are_read_from_headers_without_decoding():
    """What the memory check (edgeembed.memory) reads before a decode: the size the decoder gives, for every format
    OpenCV writes here and the variants other programs write (BigTIFF, big-endian and multi-page TIFF, PNM with
    comments, a bare JPEG 2000 codestream, an animated GIF), and the real pictures of ../shared."""
    import io

    from PIL import Image

    from edgeembed.image_header import image_size, sample_planes

    rng = np.random.default_rng(0)
    bgr, bgra = rng.integers(0, 255, (37, 53, 3), np.uint8), rng.integers(0, 255, (37, 53, 4), np.uint8)
    encoded = {}
    for ext, img, params in ((".jpg", bgr, []), (".png", bgr, []), (".bmp", bgr, []),
                             (".webp", bgr, [cv2.IMWRITE_WEBP_QUALITY, 80]),  # lossy: VP8
                             (".webp", bgr, [cv2.IMWRITE_WEBP_QUALITY, 101]),  # lossless: VP8L
                             (".webp", bgra, [cv2.IMWRITE_WEBP_QUALITY, 80]),  # with alpha: VP8X
                             (".tif", bgr, []), (".tif", bgra, []), (".pgm", bgr[..., 0], []), (".ppm", bgr, []),
                             (".pbm", bgr[..., 0], []), (".pam", bgr, []), (".jp2", bgr, []), (".jp2", bgra, []),
                             (".jp2", bgr[..., 0], []), (".gif", bgr, []), (".avif", bgr, []), (".avif", bgra, [])):
        if ext in (".gif", ".avif") and not cv2.haveImageWriter("x" + ext):
            continue  # OpenCV before 4.12 (a Pi's) writes neither; OpenCV 5, as in CI, writes both
        ok, buf = cv2.imencode(ext, img, params)
        assert ok, ext
        data = buf.tobytes()
        assert image_size(data) == (37, 53) == decode_image(data).shape[:2], ext
        encoded.setdefault(ext, []).append(data)
    assert [sample_planes(d) for d in encoded[".jp2"]] == [3, 4, 1]  # OpenJPEG holds 4 bytes per sample of each
    assert [sample_planes(d) for d in encoded.get(".avif", [])] == [3, 4][:len(encoded.get(".avif", []))]  # alpha: 2x
    others = []
    pil = Image.fromarray(bgr)
    for options in ({"big_tiff": True}, {"compression": "tiff_deflate"}, {"save_all": True,  # first page decoded
                                                                          "append_images": [Image.new("RGB", (300, 200))]}):
        out = io.BytesIO()
        pil.save(out, "TIFF", **options)
        others.append(out.getvalue())
    tiff = encoded[".tif"][0]  # the same picture big-endian: every field of the header and the directory swapped
    others.append(_big_endian_tiff(tiff))
    others.append(b"P6\n# made by hand\n53 # width\n37\n255\n" + bgr.tobytes())
    jp2 = encoded[".jp2"][0]
    codestream = jp2[jp2.index(b"\xff\x4f\xff\x51"):]
    assert sample_planes(codestream) == 3
    others.append(codestream)
    out = io.BytesIO()
    pil.save(out, "GIF", save_all=True, append_images=[Image.fromarray(bgr[::-1])])
    others.append(out.getvalue())
    for data in others:
        assert image_size(data) == (37, 53), data[:8]
        if not data.startswith(b"GIF") or _reads_gif():
            assert decode_image(data).shape[:2] == (37, 53), data[:8]
    for path in (DATA / "coral-images" / "cat.bmp", DATA / "coral-images" / "owl.jpg", DATA / "orl-faces" / "s1" / "1.pgm"):
        assert image_size(path.read_bytes()) == read_image(path).shape[:2]
    assert image_size(tiff[:8]) is None and image_size(b"P6\n53") is None and image_size(jp2[:40]) is None  # cut short
    # an OS/2 BMP (12-byte core header: 16-bit sizes), 24-bit, rows padded to 4 bytes
    row = (53 * 3 + 3) // 4 * 4
    core = (b"BM" + (26 + 37 * row).to_bytes(4, "little") + b"\0" * 4 + (26).to_bytes(4, "little")
            + (12).to_bytes(4, "little") + (53).to_bytes(2, "little") + (37).to_bytes(2, "little")
            + (1).to_bytes(2, "little") + (24).to_bytes(2, "little") + b"\x80" * (37 * row))
    assert image_size(core) == (37, 53) == decode_image(core).shape[:2]
    # a progressive JPEG keeps a full-size coefficient buffer (2 bytes per sample) whatever the reduction
    from edgeembed.image_header import jpeg_coefficient_bytes

    big = rng.integers(0, 255, (64, 96, 3), np.uint8)
    assert jpeg_coefficient_bytes(cv2.imencode(".jpg", big)[1].tobytes()) == 0  # baseline
    progressive = [cv2.IMWRITE_JPEG_PROGRESSIVE, 1]
    assert jpeg_coefficient_bytes(cv2.imencode(".jpg", big, progressive)[1].tobytes()) == 64 * 96 * 3  # 4:2:0
    s444 = progressive + [cv2.IMWRITE_JPEG_SAMPLING_FACTOR, cv2.IMWRITE_JPEG_SAMPLING_FACTOR_444]
    assert jpeg_coefficient_bytes(cv2.imencode(".jpg", big, s444)[1].tobytes()) == 64 * 96 * 6
    assert image_size(b"\x89PNG\r\n\x1a\n") is None  # cut before its header


def _big_endian_tiff(data: bytes) -> bytes:
    """A little-endian TIFF's header and first directory rewritten big-endian (its image bytes are unchanged: a
    strip of 8-bit samples reads the same either way)."""
    out = bytearray(data)
    out[:8] = b"MM\x00*" + data[4:8][::-1]
    ifd = int.from_bytes(data[4:8], "little")
    count = int.from_bytes(data[ifd:ifd + 2], "little")
    out[ifd:ifd + 2] = data[ifd:ifd + 2][::-1]
    sizes = {1: 1, 2: 1, 3: 2, 4: 4, 5: 8, 6: 1, 7: 1, 8: 2, 9: 4, 10: 8, 11: 4, 12: 8}
    for k in range(count):
        e = ifd + 2 + 12 * k
        kind, n = int.from_bytes(data[e + 2:e + 4], "little"), int.from_bytes(data[e + 4:e + 8], "little")
        out[e:e + 2], out[e + 2:e + 4], out[e + 4:e + 8] = data[e:e + 2][::-1], data[e + 2:e + 4][::-1], data[e + 4:e + 8][::-1]
        width = sizes[kind]
        where = e + 8 if width * n <= 4 else int.from_bytes(data[e + 8:e + 12], "little")
        if width * n > 4:
            out[e + 8:e + 12] = data[e + 8:e + 12][::-1]
        for j in range(n):  # each value in place, swapped (left-justified when inline)
            v = where + j * width
            out[v:v + width] = data[v:v + width][::-1]
    nxt = ifd + 2 + 12 * count
    out[nxt:nxt + 4] = data[nxt:nxt + 4][::-1]
    return bytes(out)


def _reads_gif() -> bool:
    """OpenCV reads GIF from 4.11's optional codec on (5.0 here); the pip wheel of 4.11 a Pi gets does not."""
    return cv2.imdecode(np.frombuffer(b"GIF89a\x01\x00\x01\x00\x00\x00\x00,\x00\x00\x00\x00\x01\x00\x01\x00"
                                      b"\x00\x02\x02D\x01\x00;", np.uint8), cv2.IMREAD_COLOR) is not None
