"""``fedge release``: ``build`` a release from a checkpoint (distil, export, quantize, report).

``build`` lives in :mod:`fedge.cli.release_build` (one student, or one artifact per device
profile with ``--profile``); ``build --publish-percent P`` also signs the fresh build as the
coordinator's next release and rolls it out to a P% canary (the pipeline's automatic publish
step). The rollout commands (publish, promote, rollback, ...) of
:mod:`fedge.cli.release_rollout` are registered in the same group.
"""

from fedge.cli.common import command_group
from fedge.cli.release_build import build_command, print_release_summary
from fedge.cli.release_rollout import register as register_rollout

__all__ = ["app", "build_command", "print_release_summary"]

app = command_group("Build, sign and roll out model releases.")
app.command("build")(build_command)

register_rollout(app)
