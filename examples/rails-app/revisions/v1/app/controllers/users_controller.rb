class UsersController < ApplicationController
  def index
    render json: User.order(:id).as_json(only: %i[id email name])
  end

  def create
    user = User.create!(params.require(:user).permit(:email, :name))
    render status: :created, json: user.as_json(only: %i[id email name])
  end
end
