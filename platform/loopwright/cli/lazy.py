"""Commands that cost nothing until they run: a typer group that loads and converts on use.

Typer turns every registered function into a click command up front (reading each signature
and evaluating its annotations), and ``main.py`` would import every command module to register
them: together most of a command's start-up once the libraries are loaded. A
:class:`LazyGroup` holds commands as ``name -> "module:attribute"`` (``lazy``) and as typer's
unconverted ``CommandInfo`` (``pending``), and imports or converts one only when click asks
for it by name: ``loopwright runs list`` imports ``cli/runs.py`` and converts ``list`` alone,
never the agent, the providers or the sidecar (``bench/cli.py`` measures it against ``rq
info``). ``--help`` asks for every command, so it still lists them all.
"""

from __future__ import annotations

import copy
import importlib
from typing import TYPE_CHECKING, Any, ClassVar

from typer.core import TyperGroup

if TYPE_CHECKING:
    from typer.models import CommandInfo

# typer's traceback printer, which this flag shapes, is off for the whole CLI (main.py).
_SHORT = True


class LazyGroup(TyperGroup):
    """A typer group whose commands are imported and converted when first asked for."""

    # name -> "module:attribute" (a function or a ``typer.Typer``), in ``--help`` order.
    lazy: ClassVar[dict[str, str]] = {}

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.pending: dict[str, CommandInfo] = {}

    def list_commands(self, ctx: Any) -> list[str]:
        names = [*self.lazy, *self.pending, *super().list_commands(ctx)]
        return list(dict.fromkeys(names))

    def get_command(self, ctx: Any, cmd_name: str) -> Any:
        if cmd_name not in self.commands:
            from typer.main import get_command_from_info

            if cmd_name in self.pending:
                info = self.pending.pop(cmd_name)
                markup = self.rich_markup_mode
                command = get_command_from_info(
                    info, pretty_exceptions_short=_SHORT, rich_markup_mode=markup
                )
                self.add_command(command, cmd_name)
            elif cmd_name in self.lazy:
                self.add_command(self._load(cmd_name, self.lazy[cmd_name]), cmd_name)
        return super().get_command(ctx, cmd_name)

    def _load(self, name: str, target: str) -> Any:
        """The command ``target`` names, converted as typer converts registered ones."""
        import typer
        from typer.main import get_command_from_info, get_command_name, get_group_from_info
        from typer.models import CommandInfo, TyperInfo

        module, _, attr = target.partition(":")
        obj = getattr(importlib.import_module(module), attr)
        markup = self.rich_markup_mode
        if not isinstance(obj, typer.Typer):
            info = CommandInfo(name=name, callback=obj)
            return get_command_from_info(
                info, pretty_exceptions_short=_SHORT, rich_markup_mode=markup
            )
        # The group itself now (its help, options, callback), its commands when asked for.
        shell = copy.copy(obj)
        shell.registered_commands = []
        group = get_group_from_info(
            TyperInfo(shell, name=name, cls=LazyGroup),
            pretty_exceptions_short=_SHORT,
            suggest_commands=self.suggest_commands,
            rich_markup_mode=markup,
        )
        assert isinstance(group, LazyGroup)
        for info in obj.registered_commands:
            assert info.callback is not None
            group.pending[info.name or get_command_name(info.callback.__name__)] = info
        return group
