"""tools/summarize_run.py: the main job's summary and its results file.

The work dir is written by hand as mmengine writes it (training records
with ``time`` and ``loss``, then the validation record), so the expected
figures are the hand-written ones.
"""
import json
import os
import subprocess
import sys

from tests.conftest import ROOT

SCRIPT = os.path.join(ROOT, 'tools', 'summarize_run.py')


def _work_dir(tmp_path):
    vis = tmp_path / 'work' / '20261206_080000' / 'vis_data'
    vis.mkdir(parents=True)
    records = [
        dict(iter=20, loss=1.2, time=1.5),
        dict(iter=40, loss=0.9, time=1.1),
        dict(iter=60, loss=0.7, time=1.3),
        {
            'coco/bbox_mAP': 0.7741,
            'coco/bbox_mAP_50': 0.978,
            'coco/bbox_mAP_75': 0.926,
            'step': 60
        },
    ]
    (vis /
     'scalars.json').write_text('\n'.join(json.dumps(r)
                                          for r in records) + '\n')
    return str(tmp_path / 'work')


def _run(args, env_dir):
    env = dict(os.environ, FOCAL_RETINA_RESULTS_DIR=env_dir)
    return subprocess.run([sys.executable, SCRIPT, *args],
                          capture_output=True,
                          text=True,
                          cwd=ROOT,
                          env=env,
                          timeout=120)


def test_summary_written_to_the_results_file(tmp_path):
    work = _work_dir(tmp_path)
    out = _run([
        work, '--train-seconds', '618', '--checkpoint', 'w/iter_60.pth',
        '--results', 'main_job', '--load-before', '3.10 2.50 1.20 2/300 4567'
    ], str(tmp_path / 'results'))
    assert out.returncode == 0, out.stderr
    with open(tmp_path / 'results' / 'main_job.json') as f:
        record = json.load(f)
    assert record['coco']['bbox_mAP'] == 0.7741
    assert record['coco']['bbox_mAP_50'] == 0.978
    assert record['train_seconds'] == 618
    assert record['train_minutes'] == 618 / 60
    assert record['iterations'] == 60
    assert record['seconds_per_iter'] == 1.3  # median of 1.5, 1.1, 1.3
    assert record['meta']['load_average']['before'] == [3.1, 2.5, 1.2]
    figures = ('main job summary\n'
               '  bbox AP 0.774  AP50 0.978  AP75 0.926\n'
               '  training + validation wall time: 10.3 min')
    assert record['summary_figures'] == figures
    assert record['summary'] == figures + '\n  checkpoint: w/iter_60.pth'
    assert 'tools/summarize_run.py' in record['meta']['command']


def test_no_results_file_without_the_option(tmp_path):
    out = _run([_work_dir(tmp_path)], str(tmp_path / 'results'))
    assert out.returncode == 0, out.stderr
    assert 'bbox AP 0.774' in out.stdout + out.stderr
    assert not (tmp_path / 'results').exists()


def test_bad_load_before_is_one_line(tmp_path):
    out = _run([_work_dir(tmp_path), '--results', 'x', '--load-before', 'n/a'],
               str(tmp_path / 'results'))
    assert out.returncode != 0
    assert "--load-before 'n/a': expected the three load averages" in (
        out.stderr)


def test_the_amp_choice_is_summed_up(tmp_path):
    """What --amp auto chose (the train log's line) is in the summary and
    the results file: the wall time means nothing without it."""
    work = _work_dir(tmp_path)
    (tmp_path / 'work' / '20261206_080000' / '20261206_080000.log'
     ).write_text('12/06 08:00:01 - mmengine - INFO - --amp auto: bf16 '
                  'autocast off: a training step of 1 x 256 px took 0.2 s '
                  'in float32, 0.3 s in bf16 (1.50x; ...)\n')
    out = _run([work, '--train-seconds', '60', '--results', 'main_job'],
               str(tmp_path / 'results'))
    assert out.returncode == 0, out.stderr
    with open(tmp_path / 'results' / 'main_job.json') as f:
        record = json.load(f)
    assert record['amp_choice'] == 'bf16 autocast off'
    assert record['summary_figures'].splitlines()[-1] == (
        '  --amp auto: bf16 autocast off')
