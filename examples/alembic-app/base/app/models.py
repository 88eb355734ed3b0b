"""The SQLAlchemy models. They mirror what the migrations create; the migrations are the truth."""

from sqlalchemy import String
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


class Base(DeclarativeBase):
    pass


class User(Base):
    __tablename__ = "users"

    id: Mapped[int] = mapped_column(primary_key=True)
    email: Mapped[str] = mapped_column(String(255), unique=True)
    name: Mapped[str | None] = mapped_column(String(255))

    def to_json(self) -> dict:
        return {"id": self.id, "email": self.email, "name": self.name}
