"""`import refimpl` needs only NumPy: Numba is imported when backend="numba" asks for it,
and torch never. Each check runs in a fresh interpreter, so that what this test process
has already imported cannot hide an import."""

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import naive
import numpy as np
import pytest
from helpers import assert_close

import refimpl

ROOT = Path(__file__).resolve().parent.parent

BLOCKERS = {
    "meta_path finder": """
        import sys

        class BlockNumba:
            def find_spec(self, name, path=None, target=None):
                if name == "numba" or name.startswith("numba."):
                    raise ModuleNotFoundError(f"No module named {name!r} (blocked by the test)")
                return None

        sys.meta_path.insert(0, BlockNumba())
    """,
    "sys.modules entry of None": """
        import sys

        sys.modules["numba"] = None
    """,
}

CONFIG = dict(dim=7, depth=2, heads=3, dim_head=4, num_latents=5, activation="gelu", num_time_embeds=3)


def run_python(*sources, args=()):
    """Run the `sources` one after the other in a fresh interpreter (repository root on the
    path); returns the last line of its stdout, read as JSON."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))
    script = "\n".join(textwrap.dedent(source) for source in sources)
    result = subprocess.run(
        [sys.executable, "-c", script, *map(str, args)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=env,
        timeout=120,
    )
    assert result.returncode == 0, f"the subprocess failed:\n{result.stderr}"
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_import_refimpl_imports_neither_torch_nor_numba():
    loaded = run_python("""
        import json, sys
        import refimpl
        print(json.dumps({name: name in sys.modules for name in ("torch", "numba")}))
    """)
    assert loaded == {"torch": False, "numba": False}


def test_import_refimpl_grad_imports_neither_torch_nor_numba():
    loaded = run_python("""
        import json, sys
        import refimpl.grad
        from refimpl.grad import layers, perceiver_resampler_backward, value_and_grad
        print(json.dumps({name: name in sys.modules for name in ("torch", "numba")}))
    """)
    assert loaded == {"torch": False, "numba": False}


def test_refimpl_does_not_import_interop_and_interop_imports_no_torch():
    # users write `from refimpl import interop`; only its to_* functions import torch
    loaded = run_python("""
        import json, sys
        import refimpl
        before = "refimpl.interop" in sys.modules
        from refimpl import interop
        from refimpl.interop import flamingo_pytorch, idefics, idefics2, open_flamingo
        print(json.dumps({"interop before": before, "torch": "torch" in sys.modules, "numba": "numba" in sys.modules}))
    """)
    assert loaded == {"interop before": False, "torch": False, "numba": False}


def test_the_numpy_backend_never_imports_torch():
    loaded = run_python("""
        import json, sys
        import numpy as np
        import refimpl
        for activation in ("gelu", "squared_relu", "relu", "swiglu"):
            config = refimpl.ResamplerConfig(dim=6, depth=1, heads=2, dim_head=3, num_latents=4, activation=activation)
            params, x = refimpl.init_resampler(config), np.ones((2, 3, 6))
            refimpl.perceiver_resampler(params, x, config)
            refimpl.grad.perceiver_resampler_backward(params, x, config, np.ones((4, 6)))
        print(json.dumps({"torch": "torch" in sys.modules}))
    """)
    assert loaded == {"torch": False}


@pytest.mark.parametrize("blocker", BLOCKERS)
def test_without_numba_the_numpy_backend_works_with_gelu(blocker, tmp_path):
    # gelu needs erf, which NumPy lacks: without Numba it falls back to math.erf
    out_path = tmp_path / "out.npy"
    result = run_python(
        BLOCKERS[blocker],
        f"""
        import json
        import numpy as np
        import refimpl
        config = refimpl.ResamplerConfig(**{CONFIG!r})
        x = np.random.default_rng(5).standard_normal((2, 3, 4, 7))
        out = refimpl.perceiver_resampler(refimpl.init_resampler(config, seed=5), x, config)
        np.save(sys.argv[1], out)
        print(json.dumps({{"numba imported": sys.modules.get("numba") is not None}}))
    """,
        args=[out_path],
    )
    assert result == {"numba imported": False}
    config = refimpl.ResamplerConfig(**CONFIG)
    x = np.random.default_rng(5).standard_normal((2, 3, 4, 7))
    expected, _ = naive.perceiver_resampler(refimpl.init_resampler(config, seed=5), x, config)
    assert_close(np.load(out_path), expected)


@pytest.mark.parametrize("blocker", BLOCKERS)
def test_without_numba_backend_numba_raises_an_import_error_naming_numba(blocker):
    messages = run_python(
        BLOCKERS[blocker],
        f"""
        import json
        import numpy as np
        import refimpl
        config = refimpl.ResamplerConfig(**{CONFIG!r})
        params, x = refimpl.init_resampler(config), np.ones((2, 3, 4, 7))
        q = np.ones((3, 4))
        calls = {{
            "attention": lambda: refimpl.attention(q, q, q, backend="numba"),
            "perceiver_resampler": lambda: refimpl.perceiver_resampler(params, x, config, backend="numba"),
            "grad.attention_backward": lambda: refimpl.grad.attention_backward(q, q, q, q, backend="numba"),
            "grad.perceiver_resampler_backward": lambda: refimpl.grad.perceiver_resampler_backward(
                params, x, config, np.ones((2, 5, 7)), backend="numba"
            ),
        }}
        messages = {{}}
        for name, call in calls.items():
            try:
                call()
                messages[name] = None
            except ImportError as error:
                messages[name] = str(error)
        print(json.dumps(messages))
    """,
    )
    for name, message in messages.items():
        assert message is not None, f"{name}(backend='numba') did not raise ImportError without Numba"
        assert "numba" in message.lower(), f"{name}: the ImportError does not mention numba: {message!r}"
