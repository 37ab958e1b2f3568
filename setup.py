"""Installs the focal_retina package (``projects.focal_retina``).

The heavy stack (torch, mmcv built from source, mmdet) is installed by
``tools/setup_env.sh`` in a fixed order; see requirements/.
"""
from setuptools import find_packages, setup


def read_requirements(path: str) -> list:
    with open(path) as f:
        lines = (line.split('#')[0].strip() for line in f)
        return [line for line in lines if line]


setup(
    name='focal_retina',
    version='0.1.0',
    description='RetinaNet and the focal loss family on MMDetection 3.3',
    long_description=open('README.md').read(),
    long_description_content_type='text/markdown',
    python_requires='>=3.8',
    packages=find_packages(include=['projects', 'projects.*']),
    install_requires=read_requirements('requirements/runtime.txt'),
    extras_require={
        'tests': read_requirements('requirements/tests.txt'),
        'optional': read_requirements('requirements/optional.txt'),
        'deploy': read_requirements('requirements/deploy.txt'),
    },
    license='Apache License 2.0',
)
