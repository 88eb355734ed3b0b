"""The SQLAlchemy models. They mirror what the migrations create; the migrations are the truth."""

from datetime import datetime

from sqlalchemy import DateTime, ForeignKey, String, Text, func
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship


class Base(DeclarativeBase):
    pass


class User(Base):
    __tablename__ = "users"

    id: Mapped[int] = mapped_column(primary_key=True)
    email: Mapped[str] = mapped_column(String(255), unique=True)
    name: Mapped[str | None] = mapped_column(String(255))

    notes: Mapped[list["Note"]] = relationship(back_populates="user", passive_deletes=True)

    def to_json(self) -> dict:
        return {
            "id": self.id,
            "email": self.email,
            "name": self.name,
        }


class Note(Base):
    __tablename__ = "notes"

    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    body: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())

    user: Mapped[User] = relationship(back_populates="notes")

    def to_json(self) -> dict:
        return {
            "id": self.id,
            "user_id": self.user_id,
            "body": self.body,
            "created_at": self.created_at.isoformat(),
        }
