"""Which E2B step a build is in: buildah's `STEP n/m: <instruction>` log lines → the SDK's step numbers.

The e2b SDK numbers steps as it collected them: `base` is the FROM, `1`..`n` the builder calls in order,
`finalize` what follows them (the start and ready commands). It reads `reason.step` to point a failed build
at the line of the user's code that added the step, and log entries may carry a `step`. A v2 build is built
from the Dockerfile `steps.dockerfile_from_steps` writes, so each step owns a few of its instructions;
buildah logs each instruction as it runs it. `StepMap` lines those up.
"""

from __future__ import annotations

import re
from collections.abc import Callable

BASE_STEP = "base"
FINALIZE_STEP = "finalize"
_STEP_LINE = re.compile(r"^STEP \d+/\d+: (.*)$")


def _squash(text: str) -> str:
    return re.sub(r"\s+", "", text)


class StepMap:
    """Instructions of the Dockerfile in order, each with the E2B step it belongs to."""

    def __init__(self, instructions: list[tuple[str, str]]) -> None:
        self._instructions = [(step, _squash(text)) for step, text in instructions]
        self._next = 0
        self.current: str | None = None

    @classmethod
    def for_steps(cls, render: Callable[[list[dict]], str], steps: list[dict]) -> StepMap:
        """Map the instructions `render(steps)` writes to steps, by rendering each prefix of the steps:
        the instructions step k adds are those `render(steps[:k])` has beyond `render(steps[:k-1])`."""
        instructions: list[tuple[str, str]] = []
        previous = 0
        for k in range(len(steps) + 1):
            lines = [line for line in render(steps[:k]).splitlines() if line.strip()]
            step = BASE_STEP if k == 0 else str(k)
            instructions += [(step, line) for line in lines[previous:]]
            previous = len(lines)
        return cls(instructions)

    def line(self, text: str) -> str | None:
        """Follow a build log line; the step it belongs to (None before the first step, i.e. while resolving
        the base). Lines after the last instruction (exporting, the start command) are `finalize`."""
        match = _STEP_LINE.match(text)
        if match:
            wanted = _squash(match.group(1))
            for index in range(self._next, len(self._instructions)):
                text = self._instructions[index][1]
                # a FROM is logged with the image its reference resolved to, so it matches as a FROM
                if text == wanted or (wanted.startswith("FROM") and text.startswith("FROM")):
                    self.current = self._instructions[index][0]
                    self._next = index + 1
                    break
        elif self.current is not None and self._next >= len(self._instructions) and _after_build(text):
            self.current = FINALIZE_STEP
        return self.current


def _after_build(text: str) -> bool:
    """buildah's lines once the last instruction ran (committing the image), and the builder's own after it."""
    return text.startswith(("COMMIT", "--> ", "Successfully tagged", "exporting", "the image is unchanged",
                            "template "))
