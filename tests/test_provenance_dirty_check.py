"""run.json's git state names the dirty files; notebook output-only changes do not make a checkout dirty."""
from __future__ import annotations

import json

from fastiov_lib.run.provenance import notebook_content


def _nb(source: str, outputs: list, display: str = "Python 3") -> str:
    return json.dumps({"cells": [{"cell_type": "code", "source": [source], "metadata": {"tags": ["x"]},
                                  "outputs": outputs, "execution_count": 3 if outputs else None}],
                       "metadata": {"kernelspec": {"display_name": display}}, "nbformat": 4, "nbformat_minor": 5})


def test_saving_outputs_and_kernel_metadata_leaves_the_notebook_content_unchanged():
    committed = _nb("print(1)", [])
    saved = _nb("print(1)", [{"output_type": "stream", "text": "1"}], display="Python 3 (ipykernel)")
    assert notebook_content(committed) == notebook_content(saved)


def test_an_edited_cell_is_a_content_change():
    assert notebook_content(_nb("print(1)", [])) != notebook_content(_nb("print(2)", []))


def test_a_broken_notebook_is_not_taken_for_unchanged():
    assert notebook_content("{not json") is None
