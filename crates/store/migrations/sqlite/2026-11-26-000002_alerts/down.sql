DROP TABLE digest_schedules;
DROP TABLE alert_deliveries;
DROP TABLE alert_firings;
DROP TABLE alert_rules;
DROP TABLE alert_channels;
