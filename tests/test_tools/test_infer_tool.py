"""tools/infer.py on the real photos of ../shared/data/voc100, generated
images and a generated video: the listed detections against the model's
own ``predict`` output, the class filter, unreadable and non-image files,
globs and the video round trip (input parsing: fast, in-process; the CLI:
slow subprocesses on the CPU)."""
import csv
import glob
import json
import os
import os.path as osp
import subprocess
import sys

import cv2
import numpy as np
import pytest

from tests.conftest import ROOT
from tests.test_tools.test_analysis_tools import (DEMO, load_tool, run,
                                                  train_tiny)

# An untrained model scores ~0.01: keep everything the model outputs; and
# test at 96 px (the config: 256) to keep the CPU runs short.
TEST_CFG = {
    'model.test_cfg.score_thr': 0.0,
    'test_dataloader.dataset.pipeline.1.scale': (96, 96)
}
KEEP_ALL = ['--score-thr', '0.0', '--cfg-options'
            ] + [f'{k}={v}'.replace(' ', '') for k, v in TEST_CFG.items()]


@pytest.fixture(scope='module')
def tiny_work(tiny_shapes, tmp_path_factory) -> str:
    return train_tiny(tiny_shapes, tmp_path_factory)


# ---- input parsing -------------------------------------------------------


def test_inputs_expand_in_order(tmp_path, capsys):
    infer = load_tool('tools/infer.py')
    folder = tmp_path / 'photos'
    (folder / 'sub').mkdir(parents=True)
    for name in ('b.jpg', 'a.PNG', 'notes.txt', 'clip.mp4'):
        (folder / name).write_bytes(b'x')
    odd = tmp_path / 'photo.heic'
    odd.write_bytes(b'x')
    sources = infer.expand(
        [str(folder),
         str(odd), '0',
         str(tmp_path / 'photos' / '*.jpg')])
    assert sources == [
        ('image', str(folder / 'a.PNG')),
        ('image', str(folder / 'b.jpg')),
        ('video', str(folder / 'clip.mp4')),
        ('image', str(odd)),  # named explicitly: tried as an image
        ('camera', 0),
        ('image', str(folder / 'b.jpg')),
    ]
    out = capsys.readouterr().out
    assert f'skipped {folder / "notes.txt"}: not an image or video' in out
    assert f'skipped {folder / "sub"}: a folder' in out


def test_unique_names():
    infer = load_tool('tools/infer.py')
    used = set()
    assert infer.unique_name('a/x.jpg', used) == 'x.jpg'
    assert infer.unique_name('b/x.jpg', used) == 'b_x.jpg'
    assert infer.unique_name('b/x.jpg', used) == 'b_x_1.jpg'


def test_output_names_keep_the_extension():
    """Issue 19, item 3: outputs named so that no two inputs share one, and
    drawings named with an extension OpenCV can encode."""
    infer = load_tool('tools/infer.py')
    assert infer.output_name('image', 'd/a.jpg') == 'a.jpg'
    assert infer.output_name('image', 'd/a.PNG') == 'a.PNG'
    assert infer.output_name('image', 'd/scan') == 'scan.png'
    assert infer.output_name('image', 'd/photo.heic') == 'photo.heic.png'
    assert infer.output_name('image', 'd/.png') == '.png.png'
    assert infer.output_name('video', 'd/a.avi') == 'a.avi.mp4'
    assert infer.output_name('video', 'd/a.mov') == 'a.mov.mp4'
    assert infer.output_name('video', 'd/clip.mp4') == 'clip.mp4'
    assert infer.output_name('video', 'd/clip.MP4') == 'clip.mp4'
    assert infer.output_name('camera', 0) == 'camera0.mp4'
    # 'scan' is drawn as 'scan.png': a real 'scan.png' after it is renamed.
    used = set()
    assert infer.unique_name('d/scan', used, 'scan.png') == 'scan.png'
    assert infer.unique_name('e/scan.png', used, 'scan.png') == 'e_scan.png'


def test_only_the_pkg_resources_warning_is_filtered():
    """Issue 19, item 9: the tool silences mmengine's ``pkg_resources is
    deprecated`` warning by its message, and no other warning."""
    import warnings
    # An earlier load in this process may have left the filter in place.
    warnings.filters[:] = [
        f for f in warnings.filters
        if not (f[1] and 'pkg_resources' in f[1].pattern)
    ]
    before = list(warnings.filters)
    load_tool('tools/infer.py')
    added = [f for f in warnings.filters if f not in before]
    assert [(action, msg.pattern if msg else None, cat)
            for action, msg, cat, *_ in added
            ] == [('ignore', 'pkg_resources is deprecated', UserWarning)]


def test_an_input_that_fails_is_one_line_and_the_rest_go_on(
        tmp_path, monkeypatch, capsys):
    """Issue 19, item 3: an input whose run raises (here a stand-in for
    the model) is named in one line; the inputs after it still run, the
    list is written and the exit status is 1."""
    infer = load_tool('tools/infer.py')
    paths = [str(tmp_path / n) for n in ('first.png', 'bad.png', 'last.png')]
    for p in paths:
        open(p, 'wb').close()
    ckpt = tmp_path / 'model.pth'
    ckpt.write_bytes(b'')

    class StubDetector:
        thr = 0.5

        def __init__(self, args, cfg):
            pass

    def run_image(det, path, name, out_dir):
        if path == paths[1]:
            raise RuntimeError('the model\nfailed here')
        rec = dict(file=path, frame=None, score=0.9, bbox=[1., 2., 3., 4.])
        rec['class'] = 'circle'
        return [rec], None

    monkeypatch.setattr(infer, 'Detector', StubDetector)
    monkeypatch.setattr(infer, 'run_image', run_image)
    monkeypatch.setattr(
        'sys.argv',
        ['infer.py', DEMO,
         str(ckpt), *paths, '--out-dir',
         str(tmp_path)])
    monkeypatch.chdir(ROOT)
    with pytest.raises(SystemExit) as exc:
        infer.main()
    assert exc.value.code == 1
    captured = capsys.readouterr()
    assert [line for line in captured.out.splitlines() if 'bad.png' in line
            ] == [f'FAILED {paths[1]}: RuntimeError: the model failed here']
    assert f'1 of 3 inputs could not be read: {paths[1]}' in captured.err
    with open(tmp_path / 'detections.json') as f:
        assert [d['file'] for d in json.load(f)] == [paths[0], paths[2]]


@pytest.mark.parametrize('args,expected', [
    (['nowhere/*.jpg'], "input 'nowhere/*.jpg' matches no file"),
    (['missing.jpg'], "input 'missing.jpg' does not exist"),
    (['x.jpg', '--detections', 'out.txt'], 'expected a .json or .csv'),
    (['x.jpg', '--max-frames', '0'], '--max-frames 0: expected at least 1'),
])
def test_bad_inputs_are_one_line_errors(args, expected, tmp_path, monkeypatch,
                                        capsys):
    """Refused before the model is built (exit status 2)."""
    infer = load_tool('tools/infer.py')
    ckpt = tmp_path / 'model.pth'
    ckpt.write_bytes(b'')
    monkeypatch.setattr('sys.argv', ['infer.py', DEMO, str(ckpt), *args])
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as exc:
        infer.main()
    assert exc.value.code == 2
    assert expected in capsys.readouterr().err


# ---- the CLI ---------------------------------------------------------------


def make_video(path: str, frames: list) -> None:
    h, w = frames[0].shape[:2]
    writer = cv2.VideoWriter(path, cv2.VideoWriter_fourcc(*'mp4v'), 5, (w, h))
    for frame in frames:
        writer.write(frame)
    writer.release()


@pytest.fixture(scope='module')
def inputs(tiny_shapes, voc100, tmp_path_factory):
    """A folder with a photo, a text file and a corrupt .jpg; a glob of
    two generated images; a 10-frame generated video."""
    root = tmp_path_factory.mktemp('infer_inputs')
    folder = root / 'folder'
    folder.mkdir()
    photo = sorted(glob.glob(osp.join(voc100, 'images', '*.jpg')))[0]
    (folder / 'photo.jpg').write_bytes(open(photo, 'rb').read())
    (folder / 'notes.txt').write_text('not an image')
    (folder / 'broken.jpg').write_bytes(b'\xff\xd8 not really a jpeg' * 20)
    pngs = sorted(glob.glob(osp.join(tiny_shapes, 'val', '*.png')))
    frames = [cv2.imread(p) for p in pngs]
    make_video(str(root / 'clip.mp4'), (frames * 3)[:10])
    return dict(
        folder=str(folder),
        photo=str(folder / 'photo.jpg'),
        broken=str(folder / 'broken.jpg'),
        glob=osp.join(tiny_shapes, 'val', '00000[01].png'),
        pngs=pngs[:2],
        video=str(root / 'clip.mp4'))


@pytest.fixture(scope='module')
def unfiltered(tiny_work, inputs, tmp_path_factory):
    """One run over every input, nothing filtered."""
    out_dir = tmp_path_factory.mktemp('infer_out')
    log = run(
        'tools/infer.py',
        DEMO,
        osp.join(tiny_work, 'iter_4.pth'),
        inputs['folder'],
        inputs['glob'],
        inputs['video'],
        '--out-dir',
        str(out_dir),
        *KEEP_ALL,
        expect_rc=1)
    with open(out_dir / 'detections.json') as f:
        return log, out_dir, json.load(f)


@pytest.mark.slow
def test_bad_files_are_reported_and_the_rest_runs(unfiltered, inputs):
    log, out_dir, dets = unfiltered
    assert f'skipped {inputs["folder"]}/notes.txt: not an image or video' \
        in log
    assert f'FAILED {inputs["broken"]}: cannot read this image' in log
    assert f'1 of 5 inputs could not be read: {inputs["broken"]}' in log
    assert f'{inputs["photo"]}: 100 detections >= 0.0' in log
    assert sorted(
        osp.basename(p) for p in glob.glob(str(out_dir / 'vis' / '*'))) == [
            '000000.png', '000001.png', 'clip.mp4', 'photo.jpg'
        ]
    assert {d['file']
            for d in dets
            } == {inputs['photo'], inputs['video'], *inputs['pngs']}


def listed(dets: list, file: str) -> np.ndarray:
    rows = [[d['score'], *d['bbox']] for d in dets if d['file'] == file]
    return np.array(sorted(rows, key=lambda r: (-r[0], r[1:])))


@pytest.mark.slow
def test_listed_detections_equal_the_models_predict(unfiltered, inputs,
                                                    tiny_work, tiny_shapes):
    """The JSON equals mmdet's inference_detector (the model's predict on
    the test pipeline) for the same image and threshold."""
    from mmdet.apis import inference_detector, init_detector
    from mmengine.config import Config
    _, _, dets = unfiltered
    cfg = Config.fromfile(osp.join(ROOT, DEMO))
    cfg.merge_from_dict(TEST_CFG)
    model = init_detector(cfg, osp.join(tiny_work, 'iter_4.pth'), device='cpu')
    classes = model.dataset_meta['classes']
    for path in (inputs['photo'], *inputs['pngs']):
        pred = inference_detector(model, path).pred_instances
        ours = [d for d in dets if d['file'] == path]
        assert len(ours) == len(pred) > 0
        assert [d['frame'] for d in ours] == [None] * len(ours)
        scores = [d['score'] for d in ours]
        assert scores == sorted(scores, reverse=True)  # best first
        ref = np.array(
            sorted(([float(s), *map(float, b)]
                    for s, b in zip(pred.scores, pred.bboxes)),
                   key=lambda r: (-r[0], r[1:])))
        # Two processes may sum in another order (oneDNN, threads): boxes
        # of ~400 px agree to float32 precision, not to 1e-4 px.
        np.testing.assert_allclose(
            listed(dets, path), ref, rtol=1e-5, atol=1e-4)
        assert sorted(d['class']
                      for d in ours) == sorted(classes[int(lab)]
                                               for lab in pred.labels)


@pytest.mark.slow
def test_class_filter_keeps_only_those_classes(unfiltered, inputs, tiny_work,
                                               tmp_path):
    _, _, all_dets = unfiltered
    table = str(tmp_path / 'dets.csv')
    log = run('tools/infer.py', DEMO, osp.join(tiny_work,
                                               'iter_4.pth'), inputs['glob'],
              '--classes', 'circle', '--detections', table, '--out-dir',
              str(tmp_path), *KEEP_ALL)
    with open(table) as f:
        rows = list(csv.DictReader(f))
    assert rows and {r['class'] for r in rows} == {'circle'}
    assert {r['frame'] for r in rows} == {''}
    before = [d for d in all_dets if d['file'] in inputs['pngs']]
    assert {d['class'] for d in before} - {'circle'}  # others were there
    assert len(rows) == sum(d['class'] == 'circle' for d in before)
    bad = run(
        'tools/infer.py',
        DEMO,
        osp.join(tiny_work, 'iter_4.pth'),
        inputs['glob'],
        '--classes',
        'person',
        expect_rc=2)
    assert "--classes ['person']: not classes of this model" in bad
    assert 'Traceback' not in log + bad


@pytest.mark.slow
def test_video_round_trip(unfiltered, inputs):
    log, out_dir, dets = unfiltered
    cap = cv2.VideoCapture(str(out_dir / 'vis' / 'clip.mp4'))
    frames = []
    while True:
        ok, frame = cap.read()
        if not ok:
            break
        frames.append(frame)
    cap.release()
    assert len(frames) == 10
    assert frames[0].shape == cv2.imread(inputs['pngs'][0]).shape
    video = [d for d in dets if d['file'] == inputs['video']]
    assert sorted({d['frame'] for d in video}) == list(range(10))
    assert f'{inputs["video"]}: 10 frames' in log


# ---- outputs of every input survive (issue 19, item 3) ---------------------


def run_rc(*args) -> tuple:
    """(exit status, stdout + stderr) of a tool on the CPU."""
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ('RANK', 'WORLD_SIZE', 'LOCAL_RANK')
    }
    env['CUDA_VISIBLE_DEVICES'] = ''
    proc = subprocess.run([sys.executable, *args],
                          cwd=ROOT,
                          capture_output=True,
                          text=True,
                          timeout=600,
                          env=env)
    return proc.returncode, proc.stdout + proc.stderr


@pytest.fixture(scope='module')
def same_names(tiny_work, tiny_shapes, tmp_path_factory):
    """One run over inputs whose outputs used to collide: a folder with
    ``a.jpg`` (96 × 96) and ``a.png`` (120 × 80), ``a.avi`` (3 frames) and
    ``a.mov`` (4 frames); then a PNG named ``scan`` (no extension), a
    ``more/scan.png`` and a ``later.png``, named explicitly in that order."""
    root = tmp_path_factory.mktemp('same_names')
    folder = root / 'folder'
    (root / 'more').mkdir()
    folder.mkdir()
    pngs = sorted(glob.glob(osp.join(tiny_shapes, 'val', '*.png')))
    imgs = [cv2.imread(p) for p in pngs]
    cv2.imwrite(str(folder / 'a.jpg'), imgs[0])
    cv2.imwrite(str(folder / 'a.png'), cv2.resize(imgs[1], (80, 120)))
    make_video(str(folder / 'a.avi'), imgs[:3])
    make_video(str(folder / 'a.mov'), imgs[:4])
    (root / 'scan').write_bytes(cv2.imencode('.png', imgs[2])[1].tobytes())
    cv2.imwrite(str(root / 'more' / 'scan.png'), imgs[3])
    cv2.imwrite(str(root / 'later.png'), imgs[3])
    out_dir = root / 'out'
    rc, log = run_rc('tools/infer.py', DEMO, osp.join(tiny_work, 'iter_4.pth'),
                     str(folder), str(root / 'scan'),
                     str(root / 'more' / 'scan.png'), str(root / 'later.png'),
                     '--out-dir', str(out_dir), *KEEP_ALL)
    return rc, log, root, out_dir


def frame_count(path: str) -> int:
    cap = cv2.VideoCapture(path)
    n = 0
    while cap.read()[0]:
        n += 1
    cap.release()
    return n


@pytest.mark.slow
def test_inputs_of_the_same_stem_keep_their_outputs(same_names):
    """a.jpg / a.png used to share preds/a.json, a.avi / a.mov vis/a.mp4."""
    rc, log, root, out_dir = same_names
    assert sorted(os.listdir(out_dir / 'preds')) == [
        'a.jpg.json', 'a.png.json', 'later.png.json', 'more_scan.png.json',
        'scan.png.json'
    ]
    assert sorted(os.listdir(out_dir / 'vis')) == [
        'a.avi.mp4', 'a.jpg', 'a.mov.mp4', 'a.png', 'later.png',
        'more_scan.png', 'scan.png'
    ]
    vis = out_dir / 'vis'
    assert cv2.imread(str(vis / 'a.jpg')).shape == (96, 96, 3)
    assert cv2.imread(str(vis / 'a.png')).shape == (120, 80, 3)
    assert frame_count(str(vis / 'a.avi.mp4')) == 3
    assert frame_count(str(vis / 'a.mov.mp4')) == 4
    for name in os.listdir(out_dir / 'preds'):
        with open(out_dir / 'preds' / name) as f:
            assert len(json.load(f)['scores']) > 0
    assert 'Traceback' not in log, log[-3000:]


@pytest.mark.slow
def test_file_without_extension_is_drawn_and_the_rest_go_on(same_names):
    """A PNG named ``scan`` used to stop the run with a traceback from
    cv2.imencode (no extension to encode by): no detections.json, the
    inputs after it never run."""
    rc, log, root, out_dir = same_names
    assert rc == 0, log[-3000:]
    assert 'Traceback' not in log and 'FAILED' not in log
    assert cv2.imread(str(out_dir / 'vis' / 'scan.png')).shape == (96, 96, 3)
    with open(out_dir / 'detections.json') as f:
        files = {d['file'] for d in json.load(f)}
    folder = root / 'folder'
    assert files == {
        str(folder / n)
        for n in ('a.jpg', 'a.png', 'a.avi', 'a.mov')
    } | {
        str(root / 'scan'),
        str(root / 'more' / 'scan.png'),
        str(root / 'later.png')
    }


@pytest.mark.slow
def test_no_pkg_resources_warning_in_the_output(same_names):
    """Issue 19, item 9: mmengine's import used to print three
    ``pkg_resources is deprecated`` warnings before the tool's output."""
    _, log, _, _ = same_names
    assert 'pkg_resources is deprecated' not in log
