# Gives every user without a nickname the local part of their e-mail address.
#
# Data only, and there is no way back (no `down`): a rollback restores the backup. The sleep
# stands for a backfill over a large table: it runs longer than the `qa` environment's
# migration_timeout in deploy.toml, so there the deploy host kills it and rolls back.
class BackfillNicknames < ActiveRecord::Migration[6.1]
  def up
    execute <<~SQL
      UPDATE users SET nickname = split_part(email, '@', 1) WHERE nickname IS NULL
    SQL
    execute "SELECT pg_sleep(60)"
  end
end
