# Nicknames are dropped: the column and every value in it go. Rails can re-add the column on
# `db:rollback` (the type is given), but not its data: only the backup brings that back.
class RemoveNicknameFromUsers < ActiveRecord::Migration[6.1]
  def change
    remove_column :users, :nickname, :string
  end
end
