"""Flask CLI commands: demo data and the first coordinator."""

from __future__ import annotations

import click
from flask import Flask
from sqlalchemy import select

from .extensions import db


def register_cli(app: Flask) -> None:
    """Add Huizhen's commands to the flask CLI."""
    from .audit.cli import audit_cli

    app.cli.add_command(audit_cli)
    from .notifications.cli import notifications_cli

    app.cli.add_command(notifications_cli)

    @app.cli.command("seed-demo")
    @click.option("--if-empty", is_flag=True, help="Do nothing when users already exist.")
    @click.option("--locale", "locale", type=click.Choice(["zh_CN", "zh-CN", "en"]), default="zh_CN", show_default=True,
                  help="The demo world's language: Chinese names, facilities, cases and users, or English.")
    def seed_demo(if_empty: bool, locale: str) -> None:
        """Load the demo facilities, clinicians, availability and consults (Chinese unless --locale en)."""
        from .demo import DEMO_PASSWORD, seed
        from .models import User

        if db.session.scalar(select(User.id).limit(1)) is not None:
            if if_empty:
                click.echo("Demo data already present; nothing to do.")
                return
            raise click.ClickException("The database already has users; seed an empty database.")
        summary = seed(locale)
        click.echo(f"Demo data loaded ({summary}). Every demo password is {DEMO_PASSWORD!r}.")

    @app.cli.command("create-coordinator")
    @click.option("--email", prompt=True)
    @click.option("--name", prompt=True)
    @click.password_option()
    def create_coordinator(email: str, name: str, password: str) -> None:
        """Create an approved coordinator account."""
        from .auth.services import Registration, create_user
        from .models import AccountStatus, Role

        user = create_user(
            Registration(email=email, password=password, full_name=name, role=Role.COORDINATOR,
                         facility_id=0, licence_number="-", timezone="Asia/Shanghai"),
            status=AccountStatus.APPROVED,
        )
        db.session.commit()
        click.echo(f"Coordinator {user.email} created.")
