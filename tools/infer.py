"""Runs a trained detector on images or videos, lists and draws its detections.

    python tools/infer.py CONFIG CHECKPOINT INPUT [INPUT ...] [--score-thr 0.5]
        [--classes person chair] [--out-dir DIR] [--detections FILE]
        [--grid detections.png] [--max-frames N] [--device cpu]
        [--tile 800 [--overlap 0.2]]
    python tools/infer.py MODEL.onnx INPUT [INPUT ...] [same options]
        [--backend openvino] [--precision bf16] [--threads 2]
    python tools/infer.py MODEL.xml INPUT [INPUT ...] [same options]

A ``.onnx`` file (tools/deployment/export_onnx.py) runs with onnxruntime
(``--backend onnxruntime``, chosen by the extension) or OpenVINO
(``--backend openvino``; ``--precision bf16`` for OpenVINO's bf16), an
OpenVINO IR ``.xml`` (export_onnx.py ``--out model.xml``, or an int8 one
from tools/deployment/quantize.py) with OpenVINO: no CONFIG needed (one
given is ignored), the same listing and JSON, the boxes drawn with OpenCV;
it imports numpy, opencv and the backend only (not torch, mmcv, mmengine
or mmdet; ``--tile`` excepted, whose merging is PyTorch code);
docs/deployment.md.

An INPUT is an image, a folder (its images and videos, in name order; other
files are skipped with a note), a glob in quotes (``'photos/**/*.jpg'``), a
video file, or a camera index (``0``). For every image the detections
scoring at least ``--score-thr`` (of the ``--classes`` given, if any) are
printed, best first, and drawn into ``DIR/vis/<name>`` (the file's name;
``.png`` added when OpenCV cannot write its extension: ``scan`` →
``scan.png``); the model's raw output goes to ``DIR/preds/<name>.json``
(``a.jpg.json``, so ``a.jpg`` and ``a.png`` keep both). A video or camera
stream is run frame by frame into an annotated ``DIR/vis/<name>.mp4``
(``a.avi.mp4``; ``clip.mp4`` keeps its name; camera 0: ``camera0.mp4``;
until ``--max-frames`` or Ctrl-C). Two inputs of the same name from
different folders: the later one's outputs are prefixed with its folder
(``b_a.jpg``), then numbered (``b_a_1.jpg``). Every kept detection (file,
frame, class, score, box x1 y1 x2 y2 in pixels of the input) is written to
one file, ``DIR/detections.json`` by default, CSV if ``--detections`` ends
in .csv.
``--grid`` also tiles the drawn images into one picture.

``--tile 800 --overlap 0.2`` runs the detector on overlapping 800 px
windows of each image (or frame) and merges their boxes
(``projects.focal_retina.inference.tiling``): for photos much larger than
the training size, whose objects would shrink below the smallest anchors
if the whole photo were resized to the model's input.

An image or video that cannot be read, or that fails later (the model, an
output that cannot be written), is named in one line and the others go on;
the detections of the others are written all the same. The exit status is
0 when every input ran, 1 when some did not, 2 on a usage error.

A checkpoint runs through mmdet's DetInferencer (model, test pipeline,
visualizer). Unlike
its ``__call__`` on a list of paths, each image is decoded here and run on
its own, so one unreadable file is reported instead of stopping the run,
and the class filter is applied before drawing. Videos are read and written
with OpenCV as mmdet's ``demo/video_demo.py`` does (``mp4v``), frames
converted to RGB for the visualizer.
"""
import argparse
import csv
import glob
import json
import math
import os
import os.path as osp
import sys
import time
import warnings
from typing import List, Optional, Tuple

sys.path.insert(0, osp.dirname(osp.dirname(osp.abspath(__file__))))
# mmengine imports setuptools' pkg_resources, which warns on every run
# before the tool's own output; only that one warning is silenced (by its
# message), every other warning still shows.
warnings.filterwarnings(
    'ignore', message='pkg_resources is deprecated', category=UserWarning)

import cv2
import numpy as np

# Nothing above or here imports torch, mmcv, mmengine or mmdet: an exported
# file runs with numpy, opencv and onnxruntime or OpenVINO alone (the
# PyTorch path imports the stack in Detector and main).
from projects.focal_retina_runtime.cli import check_checkpoint, fail

# mmdet's DetInferencer IMG_EXTENSIONS; videos as OpenCV reads them.
IMG_EXT = ('.jpg', '.jpeg', '.png', '.ppm', '.bmp', '.pgm', '.tif', '.tiff',
           '.webp')
VIDEO_EXT = ('.mp4', '.avi', '.mov', '.mkv', '.m4v', '.mpg', '.mpeg', '.wmv',
             '.webm')
# Exported files: ONNX, OpenVINO IR.
MODEL_EXT = ('.onnx', '.xml')
Source = Tuple[str, object]  # ('image' | 'video' | 'camera', path | index)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('config', help='config file')
    parser.add_argument('checkpoint', help='checkpoint file')
    parser.add_argument(
        'inputs',
        nargs='*',  # at least one; checked by select_backend
        help='images, folders, quoted globs, videos or a camera index')
    parser.add_argument(
        '--score-thr',
        type=float,
        default=0.5,
        help='keep detections scoring at least this')
    parser.add_argument(
        '--classes', nargs='+', help='keep only these class names')
    parser.add_argument(
        '--out-dir',
        default='outputs',
        help='where drawn images and predictions go')
    parser.add_argument(
        '--detections',
        help='the list of every kept detection, .json or .csv '
        '(default: OUT_DIR/detections.json)')
    parser.add_argument(
        '--grid',
        help='also write the drawn images tiled '
        'into this one image file')
    parser.add_argument(
        '--max-frames', type=int, help='stop a video or camera after N')
    parser.add_argument(
        '--tile',
        type=int,
        help='run on overlapping windows of this many pixels and merge')
    parser.add_argument(
        '--overlap',
        type=float,
        default=0.2,
        help='with --tile: fraction of the window shared by neighbours')
    parser.add_argument(
        '--tile-nms',
        type=float,
        default=0.5,
        help='with --tile: IoU threshold of the NMS merging the windows')
    parser.add_argument(
        '--fuse-conv-bn',
        action='store_true',
        help='fold BatchNorm into the preceding convs (same detections, '
        'faster on the CPU)')
    parser.add_argument(
        '--device',
        default=None,
        help="e.g. 'cpu' or 'cuda:0' (default: best)")
    parser.add_argument(
        '--backend',
        choices=('auto', 'pytorch', 'onnxruntime', 'openvino'),
        default='auto',
        help='auto: onnxruntime for a .onnx file, OpenVINO for a .xml IR '
        '(CONFIG may then be omitted: the file carries classes, '
        'pre-processing and test_cfg), PyTorch otherwise')
    parser.add_argument(
        '--precision',
        choices=('fp32', 'bf16'),
        default='fp32',
        help='OpenVINO only: bf16 runs what is not int8 in bfloat16 '
        '(faster on CPUs with AVX-512 BF16 or AMX; docs/deployment.md)')
    parser.add_argument(
        '--threads',
        type=int,
        help='onnxruntime / OpenVINO threads (default: one per core)')
    parser.add_argument(
        '--cfg-options',
        nargs='+',
        metavar='KEY=VALUE',
        help='override config settings, e.g. model.test_cfg.score_thr=0.3 '
        '(PyTorch only)')
    return parser.parse_args()


def parse_cfg_options(args: argparse.Namespace) -> Optional[dict]:
    """``--cfg-options`` parsed as mmengine's ``DictAction`` parses them
    (only on the PyTorch path: parsing them imports mmengine)."""
    if not args.cfg_options:
        return None
    from mmengine.config import DictAction
    ns = argparse.Namespace(cfg_options=None)
    DictAction(['--cfg-options'], 'cfg_options')(None, ns, args.cfg_options)
    return ns.cfg_options


def select_backend(args: argparse.Namespace) -> None:
    """Resolves ``--backend``. An ``.onnx`` model needs no CONFIG:
    ``infer.py model.onnx IMG ...`` shifts the positionals; a CONFIG given
    with one is ignored (its metadata is what was exported)."""
    if args.config.lower().endswith(MODEL_EXT):  # CONFIG omitted
        args.inputs = [args.checkpoint] + args.inputs
        args.checkpoint, args.config = args.config, None
    if not args.inputs:
        fail('the following arguments are required: inputs')
    model = args.checkpoint.lower()
    if args.backend == 'auto':
        args.backend = ('openvino' if model.endswith('.xml') else 'onnxruntime'
                        if model.endswith('.onnx') else 'pytorch')
    if args.backend == 'pytorch':
        if args.config is None:
            fail(f'--backend pytorch needs a CONFIG before {args.checkpoint}')
        for given, what in ((args.precision != 'fp32', '--precision'),
                            (args.threads, '--threads')):
            if given:
                fail(f'{what} applies to an exported file (onnxruntime, '
                     'OpenVINO); a checkpoint runs as PyTorch does')
        return
    if model.endswith('.xml') and args.backend != 'openvino':
        fail(f'{args.checkpoint} is an OpenVINO IR: run it with --backend '
             'openvino (or auto)')
    if args.precision != 'fp32' and args.backend != 'openvino':
        fail(f'--precision {args.precision}: onnxruntime runs the file as '
             'exported; --backend openvino runs it in bf16')
    if args.threads is not None and args.threads < 1:
        fail(f'--threads {args.threads}: expected at least 1')
    if args.config is not None:
        print(f'note: {args.config} ignored: {args.checkpoint} carries its '
              'classes, pre-processing and test_cfg')
    for given, what in ((args.cfg_options, '--cfg-options'),
                        (args.fuse_conv_bn, '--fuse-conv-bn')):
        if given:
            fail(f'{what} applies to a PyTorch checkpoint; an .onnx file is '
                 'fixed at export (tools/deployment/export_onnx.py takes '
                 '--cfg-options)')
    if args.device not in (None, 'cpu'):
        fail(f'--device {args.device}: the {args.backend} backend runs on '
             'the CPU')


def tile(images: list, cols: int) -> np.ndarray:
    """Tiles RGB images of any sizes into a grid, padding with white."""
    h = max(img.shape[0] for img in images)
    w = max(img.shape[1] for img in images)
    rows = math.ceil(len(images) / cols)
    grid = np.full((rows * h, cols * w, 3), 255, dtype=np.uint8)
    for i, img in enumerate(images):
        r, c = divmod(i, cols)
        grid[r * h:r * h + img.shape[0], c * w:c * w + img.shape[1]] = img
    return grid


def classify(path: str, listed: bool) -> Optional[Source]:
    """An input file as a source; None (with a note) for a listed file
    that is neither an image nor a video. A named file of another
    extension is tried as an image."""
    ext = osp.splitext(path)[1].lower()
    if ext in VIDEO_EXT:
        return ('video', path)
    if ext in IMG_EXT or not listed:
        return ('image', path)
    print(f'skipped {path}: not an image or video')
    return None


def expand(inputs: List[str]) -> List[Source]:
    """Images, videos and cameras of the inputs, in order."""
    sources = []
    for p in inputs:
        if osp.isdir(p):
            listed = [osp.join(p, f) for f in sorted(os.listdir(p))]
        elif osp.isfile(p):
            sources.append(classify(p, listed=False))
            continue
        elif p.isdigit():
            sources.append(('camera', int(p)))
            continue
        elif glob.has_magic(p):
            listed = sorted(glob.glob(p, recursive=True))
            if not listed:
                fail(f'input {p!r} matches no file')
        else:
            fail(f'input {p!r} does not exist')
        for f in listed:
            if osp.isdir(f):
                print(f'skipped {f}: a folder (folders are not searched)')
            else:
                sources.append(classify(f, listed=True))
    return [s for s in sources if s is not None]


class Filter:
    """The score / class filter and the listing, for both backends.

    Args:
        args: The parsed arguments (``score_thr``, ``classes``, ``tile``,
            ``overlap``, ``tile_nms``).
        classes: The model's class names, in label order.
    """

    def __init__(self, args, classes: List[str]) -> None:
        self.classes = list(classes)
        self.thr = args.score_thr
        self.tile = args.tile
        self.overlap, self.tile_nms = args.overlap, args.tile_nms
        self.keep_labels = None
        if args.classes:
            unknown = [c for c in args.classes if c not in self.classes]
            if unknown:
                fail(f'--classes {unknown}: not classes of this model '
                     f'(it has {self.classes})')
            self.keep_labels = [self.classes.index(c) for c in args.classes]

    def listing(self, scores, labels, bboxes, file: str,
                frame: Optional[int]) -> List[dict]:
        """One record per detection (NumPy arrays, best first)."""
        return [
            dict(
                file=file,
                frame=frame,
                **{'class': self.classes[int(lab)]},
                score=float(s),
                bbox=[float(v) for v in box])
            for s, lab, box in zip(scores, labels, bboxes)
        ]


class Detector(Filter):
    """DetInferencer (PyTorch), a score/class filter and the drawing of its
    boxes with mmdet's visualizer."""

    def __init__(self, args, cfg) -> None:
        from mmdet.apis import DetInferencer
        from mmengine.runner.checkpoint import CheckpointLoader

        from projects.focal_retina.engine.hooks import check_fit
        self.inferencer = DetInferencer(
            model=cfg,
            weights=args.checkpoint,
            device=args.device,
            show_progress=False)
        # DetInferencer loads what matches and warns about the rest: a
        # checkpoint of another model would draw random boxes.
        check_fit(
            self.inferencer.model,
            CheckpointLoader.load_checkpoint(
                args.checkpoint, map_location='cpu'))
        if args.fuse_conv_bn:
            from projects.focal_retina.engine.fuse import fuse_for_inference
            folded = fuse_for_inference(self.inferencer.model)
            print(f'--fuse-conv-bn: folded {folded} BatchNorm layers')
        super().__init__(args, self.inferencer.model.dataset_meta['classes'])

    def __call__(self, bgr: np.ndarray):
        """(raw DetDataSample, kept pred_instances sorted by score)."""
        import torch
        if self.tile:
            from projects.focal_retina.inference import detect_tiled
            sample = detect_tiled(self.predict, bgr, self.tile, self.overlap,
                                  self.tile_nms)
        else:
            sample = self.predict(bgr)
        inst = sample.pred_instances
        keep = inst.scores >= self.thr
        if self.keep_labels is not None:
            keep &= torch.isin(
                inst.labels,
                torch.tensor(self.keep_labels).to(inst.labels.device))
        kept = inst[keep]
        return sample, kept[kept.scores.argsort(descending=True)]

    def predict(self, bgr: np.ndarray):
        """The model's DetDataSample for one BGR image."""
        return self.inferencer(
            bgr, return_datasamples=True, no_save_vis=True,
            no_save_pred=True)['predictions'][0]

    def pred2dict(self, sample) -> dict:
        """The model's raw output as mmdet writes it (``preds/*.json``)."""
        return self.inferencer.pred2dict(sample)

    def draw(self,
             rgb: np.ndarray,
             sample,
             kept,
             out_file: Optional[str] = None) -> np.ndarray:
        """The RGB image with the kept boxes (saved to ``out_file``)."""
        shown = sample.clone()
        shown.pred_instances = kept
        vis = self.inferencer.visualizer
        # Already filtered; mmdet draws scores > thr, so -1 keeps all.
        vis.add_datasample(
            'image',
            rgb,
            shown,
            draw_gt=False,
            pred_score_thr=-1.0,
            out_file=out_file)
        return vis.get_image()

    def records(self, kept, file: str, frame: Optional[int]) -> List[dict]:
        return self.listing(kept.scores.cpu().numpy(),
                            kept.labels.cpu().numpy(),
                            kept.bboxes.cpu().numpy(), file, frame)


class OnnxBackend(Filter):
    """An exported file (``.onnx`` or OpenVINO IR) in onnxruntime or
    OpenVINO with the NumPy pre- and post-processing
    (``projects.focal_retina_runtime``): the same filter, listing and
    ``preds/*.json`` as :class:`Detector`, boxes drawn with OpenCV. Imports
    numpy, opencv and the backend only; ``--tile`` merges the windows with
    the PyTorch code of ``projects.focal_retina.inference`` and so imports
    torch, mmcv and mmdet.
    """

    def __init__(self, args) -> None:
        from projects.focal_retina_runtime import DeployError, OnnxDetector
        try:
            self.detector = OnnxDetector(
                args.checkpoint,
                threads=args.threads,
                backend=args.backend,
                precision=args.precision)
        except DeployError as exc:
            fail(str(exc))
        print(f'{args.checkpoint}: {self.detector.describe()}')
        self.palette = self.detector.meta.get('palette')
        self.test_cfg = self.detector.meta['test_cfg']
        super().__init__(args, self.detector.classes)

    def predict(self, bgr: np.ndarray) -> dict:
        """``bboxes``, ``scores``, ``labels`` of one BGR image."""
        return self.detector([bgr])[0]

    def _tiled(self, bgr: np.ndarray) -> dict:
        from projects.focal_retina.deployment.inferencer import (
            from_data_sample, to_data_sample)
        from projects.focal_retina.inference import detect_tiled
        sample = detect_tiled(
            lambda crop: to_data_sample(self.predict(crop), crop.shape[:2]),
            bgr, self.tile, self.overlap, self.tile_nms)
        return from_data_sample(sample)

    def __call__(self, bgr: np.ndarray) -> Tuple[dict, dict]:
        """(all detections, the kept ones best first), NumPy dicts."""
        dets = self._tiled(bgr) if self.tile else self.predict(bgr)
        keep = dets['scores'] >= self.thr
        if self.keep_labels is not None:
            keep &= np.isin(dets['labels'], self.keep_labels)
        kept = {k: v[keep] for k, v in dets.items()}
        order = np.argsort(-kept['scores'], kind='stable')
        return dets, {k: v[order] for k, v in kept.items()}

    @staticmethod
    def pred2dict(dets: dict) -> dict:
        """mmdet's ``DetInferencer.pred2dict`` of these detections."""
        return dict(
            labels=dets['labels'].tolist(),
            scores=dets['scores'].tolist(),
            bboxes=dets['bboxes'].tolist())

    def draw(self,
             rgb: np.ndarray,
             dets: dict,
             kept: dict,
             out_file: Optional[str] = None) -> np.ndarray:
        """The RGB image with the kept boxes (saved to ``out_file``)."""
        from projects.focal_retina_runtime import draw_detections
        drawn = draw_detections(rgb, kept['bboxes'], kept['scores'],
                                kept['labels'], self.classes, self.palette)
        if out_file is not None:
            os.makedirs(osp.dirname(osp.abspath(out_file)), exist_ok=True)
            if not cv2.imwrite(out_file, drawn[..., ::-1]):
                raise OSError(f'cannot write {out_file}')
        return drawn

    def records(self, kept: dict, file: str,
                frame: Optional[int]) -> List[dict]:
        return self.listing(kept['scores'], kept['labels'], kept['bboxes'],
                            file, frame)


def output_name(kind: str, src) -> str:
    """The name an input is drawn into under ``vis/``.

    An image keeps its file name when OpenCV can write that extension,
    else ``.png`` is added (``scan`` → ``scan.png``, ``a.heic`` →
    ``a.heic.png``): the drawing is encoded by the name's extension. A
    video gets ``.mp4`` added unless it is one (``a.avi`` → ``a.avi.mp4``,
    ``clip.mp4`` stays), so that ``a.avi`` and ``a.mov`` do not both
    become ``a.mp4``; camera 0 is ``camera0.mp4``.

    Args:
        kind: ``'image'``, ``'video'`` or ``'camera'``.
        src: The input's path, or the camera index.

    Returns:
        A file name (no folder).
    """
    if kind == 'camera':
        return f'camera{src}.mp4'
    name = osp.basename(src)
    stem, ext = osp.splitext(name)
    if kind == 'video':
        return stem + '.mp4' if ext.lower() == '.mp4' else name + '.mp4'
    # mmcv.imwrite encodes by osp.splitext's extension; a name such as
    # '.png' has none there.
    if not ext or not cv2.haveImageWriter('x' + ext):
        name += '.png'
    return name


def unique_name(path: str, used: set, name: Optional[str] = None) -> str:
    """An output file name no earlier input has (recorded in ``used``).

    Args:
        path: The input's path.
        used: The names already given; the returned one is added.
        name: The wanted name (default: the file's name), prefixed with
            the input's folder if already used, then numbered.

    Returns:
        The unique name.
    """
    name = osp.basename(path) if name is None else name
    if name in used:
        name = f'{osp.basename(osp.dirname(osp.abspath(path)))}_{name}'
    base, n = name, 1
    while name in used:
        stem, ext = osp.splitext(base)
        name, n = f'{stem}_{n}{ext}', n + 1
    used.add(name)
    return name


def run_image(det: Filter, path: str, name: str, out_dir: str):
    """Returns (records, drawn RGB image), or None when unreadable."""
    from projects.focal_retina_runtime import read_image
    bgr = read_image(path)  # what mmcv.imread reads, or None
    if bgr is None:
        return None
    sample, kept = det(bgr)
    os.makedirs(osp.join(out_dir, 'preds'), exist_ok=True)
    # Named after the drawn file, extension included: 'a.jpg' and 'a.png'
    # would share 'a.json'.
    with open(osp.join(out_dir, 'preds', name + '.json'), 'w') as f:
        json.dump(det.pred2dict(sample), f)
    drawn = det.draw(bgr[..., ::-1], sample, kept,
                     osp.join(out_dir, 'vis', name))
    records = det.records(kept, path, None)
    print(f'{path}: {len(records)} detections >= {det.thr}')
    for rec in records:
        print(f'  {rec["class"]:<12} {rec["score"]:.3f}  '
              f'[{", ".join(f"{v:.1f}" for v in rec["bbox"])}]')
    return records, drawn


class Progress:
    """Frames done (of ``total`` when known) and the rate, rewritten in
    place (mmengine's ``ProgressBar`` without importing mmengine)."""

    def __init__(self, total: int) -> None:
        self.total, self.done = max(total, 0), 0
        self.start = time.perf_counter()

    def update(self) -> None:
        self.done += 1
        rate = self.done / max(time.perf_counter() - self.start, 1e-9)
        of = f'/{self.total}' if self.total else ''
        sys.stdout.write(f'\r{self.done}{of} frames, {rate:.1f} frames/s')
        sys.stdout.flush()


def run_video(det: Filter, src, name: str, out_dir: str,
              max_frames: Optional[int]) -> Optional[List[dict]]:
    """Frame by frame into an annotated video; None when unreadable."""
    cap = cv2.VideoCapture(src)
    label = f'camera {src}' if isinstance(src, int) else src
    if not cap.isOpened():
        cap.release()
        return None
    fps = cap.get(cv2.CAP_PROP_FPS)
    fps = fps if fps and fps > 0 and math.isfinite(fps) else 25.0
    total = int(cap.get(cv2.CAP_PROP_FRAME_COUNT) or 0)
    if max_frames is not None:
        total = min(total, max_frames) if total > 0 else max_frames
    out = osp.join(out_dir, 'vis', name)
    writer, records, frame = None, [], 0
    progress = Progress(total)
    try:
        while max_frames is None or frame < max_frames:
            ok, bgr = cap.read()
            if not ok:
                break
            sample, kept = det(bgr)
            records += det.records(kept, label, frame)
            drawn = det.draw(
                np.ascontiguousarray(bgr[..., ::-1]), sample, kept)
            if writer is None:
                os.makedirs(osp.dirname(out), exist_ok=True)
                writer = cv2.VideoWriter(out, cv2.VideoWriter_fourcc(*'mp4v'),
                                         fps, drawn.shape[1::-1])
            writer.write(cv2.cvtColor(drawn, cv2.COLOR_RGB2BGR))
            frame += 1
            progress.update()
    except KeyboardInterrupt:
        print(f'\n{label}: stopped')
    finally:
        cap.release()
        if writer is not None:
            writer.release()
    if frame == 0:
        return None
    print(f'\n{label}: {frame} frames, {len(records)} detections >= '
          f'{det.thr} drawn into {out}')
    return records


def write_detections(path: str, records: List[dict]) -> None:
    os.makedirs(osp.dirname(osp.abspath(path)), exist_ok=True)
    with open(path, 'w', newline='') as f:
        if path.lower().endswith('.csv'):
            w = csv.writer(f)
            w.writerow(
                ['file', 'frame', 'class', 'score', 'x1', 'y1', 'x2', 'y2'])
            for r in records:
                w.writerow([
                    r['file'], '' if r['frame'] is None else r['frame'],
                    r['class'], r['score'], *r['bbox']
                ])
        else:
            json.dump(records, f, indent=1)
    print(f'{len(records)} detections listed in {path}')


def main() -> None:
    args = parse_args()
    select_backend(args)
    check_checkpoint(
        args.checkpoint,
        'checkpoint' if args.backend == 'pytorch' else 'model file')
    if not 0 <= args.score_thr <= 1:
        fail(f'--score-thr {args.score_thr}: expected a value in [0, 1]')
    if args.tile is not None and args.tile < 1:
        fail(f'--tile {args.tile}: expected a window size of at least 1 px')
    if not 0 <= args.overlap < 1:
        fail(f'--overlap {args.overlap}: expected a value in [0, 1)')
    if not 0 < args.tile_nms <= 1:
        fail(f'--tile-nms {args.tile_nms}: expected a value in (0, 1]')
    if args.max_frames is not None and args.max_frames < 1:
        fail(f'--max-frames {args.max_frames}: expected at least 1')
    detections = args.detections or osp.join(args.out_dir, 'detections.json')
    if osp.splitext(detections)[1].lower() not in ('.json', '.csv'):
        fail(f'--detections {detections!r}: expected a .json or .csv file')
    sources = expand(args.inputs)
    if args.backend == 'pytorch':
        from projects.focal_retina.engine.checkpoint import \
            CheckpointUnavailableError
        from projects.focal_retina.engine.cli import load_config
        from projects.focal_retina.engine.hooks import CheckpointMismatchError
        cfg = load_config(args.config, parse_cfg_options(args))
        try:
            det = Detector(args, cfg)
        except (CheckpointUnavailableError, CheckpointMismatchError) as exc:
            fail(str(exc))
        model_thr = cfg.model.get('test_cfg', {}).get('score_thr')
    else:
        det = OnnxBackend(args)
        model_thr = det.test_cfg.get('score_thr')
    if model_thr is not None and args.score_thr < model_thr:
        where = '--cfg-options' if args.backend == 'pytorch' else \
            'tools/deployment/export_onnx.py --cfg-options'
        print(f'note: the model drops scores below its test_cfg.score_thr='
              f'{model_thr} (set it with {where})')
    records, drawn, failed, used = [], [], [], set()
    for kind, src in sources:
        path = f'camera{src}' if kind == 'camera' else src
        name = unique_name(path, used, output_name(kind, src))
        try:
            if kind == 'image':
                out = run_image(det, src, name, args.out_dir)
            else:
                out = run_video(det, src, name, args.out_dir, args.max_frames)
        except Exception as exc:
            # Whatever goes wrong with one input (a decoder, the model, an
            # output that cannot be written) is named in one line; the
            # other inputs still run and the list is still written.
            failed.append(src)
            msg = ' '.join(str(exc).split())
            print(f'FAILED {src}: {type(exc).__name__}: {msg}')
            continue
        if out is None:
            failed.append(src)
            print(f'FAILED {src}: cannot read this {kind}')
        elif kind == 'image':
            records += out[0]
            if args.grid:
                drawn.append(out[1])
        else:
            records += out
    write_detections(detections, records)
    if args.grid and drawn:
        grid = tile(drawn, cols=min(len(drawn), 2))
        os.makedirs(osp.dirname(osp.abspath(args.grid)), exist_ok=True)
        cv2.imwrite(args.grid, cv2.cvtColor(grid, cv2.COLOR_RGB2BGR))
        print(f'detections drawn into {args.grid}')
    if failed:
        print(
            f'{len(failed)} of {len(sources)} inputs could not be read: '
            f'{", ".join(map(str, failed))}',
            file=sys.stderr)
        sys.exit(1)


if __name__ == '__main__':
    main()
