require_relative "boot"

# Only the frameworks the app uses: Active Record and a JSON-only Action Controller.
require "rails"
require "active_model/railtie"
require "active_record/railtie"
require "action_controller/railtie"

Bundler.require(*Rails.groups)

module RailsApp
  class Application < Rails::Application
    config.load_defaults 6.1
    config.api_only = true

    # The database is DATABASE_URL (config/database.yml only names the adapter).
    # db/schema.rb is not kept: the migrations are the history the deploy host reads, and a
    # dump written by `db:migrate` would leave the checkout with local edits.
    config.active_record.dump_schema_after_migration = false
  end
end
