"""Data sets shipped inside the package (see the package NOTICE for attribution)."""

from __future__ import annotations

from dataclasses import dataclass
from importlib import resources
from pathlib import Path


@dataclass(frozen=True)
class BundledDataset:
    """One bundled file: what it is, where it came from and under which licence it may be redistributed."""

    name: str
    file: str
    """File name under ``biscale/workload/data``."""
    format: str
    """Loader format name (``azure``, ``lengths``, ...)."""
    description: str
    source: str
    licence: str

    @property
    def path(self) -> Path:
        """Absolute path of the packaged file."""
        return Path(str(resources.files("biscale.workload").joinpath("data", self.file)))


BUNDLED_TRACES: dict[str, BundledDataset] = {
    "azure-conv": BundledDataset(
        name="azure-conv",
        file="azure_llm_2023_conv.csv",
        format="azure",
        description="Azure LLM inference trace 2023, conversation service, 1 h, 19,366 requests (~5.5 req/s)",
        source="Azure/AzurePublicDataset data/AzureLLMInferenceTrace_conv.csv",
        licence="CC-BY-4.0",
    ),
    "azure-code": BundledDataset(
        name="azure-code",
        file="azure_llm_2023_code.csv",
        format="azure",
        description="Azure LLM inference trace 2023, code completion, 1 h, 8,819 requests (very bursty)",
        source="Azure/AzurePublicDataset data/AzureLLMInferenceTrace_code.csv",
        licence="CC-BY-4.0",
    ),
}
"""Bundled arrival traces by name (for :func:`~biscale.workload.load_trace`)."""

BUNDLED_LENGTHS: dict[str, BundledDataset] = {
    "sharegpt-v3": BundledDataset(
        name="sharegpt-v3",
        file="sharegpt_v3_lengths.csv",
        format="lengths",
        description="16,384 ShareGPT v3 (filtered) request lengths: prompt mean ~220, output mean ~199 tokens",
        source="microsoft/vidur (fork JonnyKong/vidur) data/processed_traces/sharegpt_v3_filtered.csv",
        licence="MIT",
    ),
}
"""Bundled length tables by name (for :func:`~biscale.workload.load_lengths`)."""
