# How the deploy host runs the app (RAILS_ENV=production, see bin/restart).
Rails.application.configure do
  config.cache_classes = true
  config.eager_load = true
  config.consider_all_requests_local = false

  # Required, from the environment: the app has no credentials file.
  config.secret_key_base = ENV.fetch("SECRET_KEY_BASE")

  # One line per request on stdout, which bin/restart sends to .run/app.log.
  config.logger = ActiveSupport::TaggedLogging.new(ActiveSupport::Logger.new($stdout))
  config.log_level = :info
  config.active_support.deprecation = :notify
end
