# What the deploy host probes after every deploy and rollback.
#
#   GET /up      200 once the app has booted; no database query (like Rails 7.1's /up).
#   GET /health  200 {"status":"ok","database":"connected","pending_migrations":0,...} when the
#                database answers and every migration of this code is applied; 503 otherwise,
#                with the pending versions, so an app running ahead of its schema is caught.
class HealthController < ApplicationController
  def up
    render json: { status: "up" }
  end

  def show
    pending = ActiveRecord::Base.connection.migration_context.open.pending_migrations
    ok = pending.empty?
    render status: ok ? :ok : :service_unavailable, json: {
      status: ok ? "ok" : "degraded",
      database: "connected",
      pending_migrations: pending.size,
      migrations: {
        status: ok ? "up_to_date" : "pending",
        pending: pending.map { |m| { version: m.version.to_s, name: m.name } },
      },
    }
  rescue ActiveRecord::ActiveRecordError, PG::Error => e
    render status: :service_unavailable, json: {
      status: "error",
      database: "unreachable",
      error: "#{e.class}: #{e.message.lines.first&.strip}",
    }
  end
end
