DROP TABLE usage_records;
DROP TABLE api_keys;
DROP TABLE organizations;
