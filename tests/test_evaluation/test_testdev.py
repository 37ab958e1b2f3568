"""validate_submission catches what the evaluation server would refuse."""
import json

import pytest

from projects.focal_retina.evaluation import validate_submission

INFO = dict(
    images=[
        dict(id=1, width=10, height=10, file_name='a.jpg'),
        dict(id=3, width=10, height=10, file_name='b.jpg')
    ],
    categories=[dict(id=1, name='person'),
                dict(id=90, name='toothbrush')])


def det(image_id=1, category_id=90, bbox=(1, 2, 3, 4), score=0.5):
    return dict(
        image_id=image_id,
        category_id=category_id,
        bbox=list(bbox),
        score=score)


def check(tmp_path, dets, **kwargs):
    info, res = tmp_path / 'info.json', tmp_path / 'res.json'
    info.write_text(json.dumps(INFO))
    res.write_text(json.dumps(dets))
    return validate_submission(str(res), str(info), **kwargs)


def test_valid_submission(tmp_path):
    assert check(tmp_path, [det(), det(3, 1)]) == 2


@pytest.mark.parametrize('dets,match', [
    ([det(image_id=2)], 'image_id not in'),
    ([det(category_id=0)], 'category_id is not one of the 2 ids'),
    ([det(bbox=(1, 2, -3, 4))], 'bbox'),
    ([{
        **det(), 'segmentation': []
    }], 'exactly the keys'),
    ([], 'non-empty list'),
])
def test_invalid_submission_names_the_problem(tmp_path, dets, match):
    with pytest.raises(ValueError, match=match):
        check(tmp_path, dets)


def test_too_many_per_image(tmp_path):
    with pytest.raises(ValueError, match='image 1 has 3 detections'):
        check(tmp_path, [det()] * 3, max_per_img=2)


@pytest.mark.parametrize('dets,match', [
    ([det(score=float('nan'))], r'score=nan, expected a finite number'),
    ([det(bbox=(1, float('inf'), 3, 4))], r'y=inf, expected a finite'),
    ([det(bbox=(float('-inf'), 2, 3, 4))], r'x=-inf, expected a finite'),
    ([det(), det(bbox=(1, 2, float('nan'), 4))], r'detection 1 .*w=nan'),
    ([det(score='0.5')], r"score='0.5', expected a finite number"),
])
def test_non_finite_values_are_refused(tmp_path, dets, match):
    """json.dump writes NaN/inf as NaN/Infinity, which the server rejects
    (and json.load reads back without complaint)."""
    assert 'NaN' in json.dumps(det(score=float('nan')))
    with pytest.raises(ValueError, match=match):
        check(tmp_path, dets)
