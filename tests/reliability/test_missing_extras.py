"""heads-core imports with torch, pydantic and safetensors alone; a missing extra names its install."""

from __future__ import annotations

import subprocess
import sys
import textwrap

BLOCK = """
import sys
for blocked in {blocked!r}:
    sys.modules[blocked] = None  # makes `import blocked` raise ImportError
"""


def run_without(blocked: list[str], code: str) -> subprocess.CompletedProcess[str]:
    script = BLOCK.format(blocked=blocked) + textwrap.dedent(code)
    return subprocess.run([sys.executable, "-c", script], check=False, capture_output=True, text=True, timeout=300)


def test_imports_without_timm_and_torchvision():
    result = run_without(["timm", "torchvision"], """
        import heads_core
        from heads_core import ClassificationHead
        import torch
        print(ClassificationHead(8, 2)(torch.randn(1, 8, 2, 2)).shape)
    """)
    assert result.returncode == 0, result.stderr
    assert "torch.Size([1, 2])" in result.stdout


def test_timm_backbone_without_timm_names_install():
    result = run_without(["timm"], """
        import heads_core
        try:
            heads_core.create_backbone("timm", "resnet18")
        except heads_core.MissingDependencyError as error:
            print(error)
    """)
    assert "pip install 'heads-core[timm]'" in result.stdout, result.stderr


def test_torchvision_manifest_without_torchvision_names_install():
    result = run_without(["torchvision"], """
        import heads_core
        data = {"name": "x", "version": "1", "task": "classification", "num_classes": 2,
                "backbone": {"source": "torchvision", "name": "resnet18"}}
        try:
            heads_core.validate_manifest(data, "x.yaml")
        except heads_core.ManifestError as error:
            print(error)
    """)
    assert "x.yaml: backbone:" in result.stdout, result.stderr
    assert "pip install 'heads-core[torchvision]'" in result.stdout
