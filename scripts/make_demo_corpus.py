#!/usr/bin/env python3
"""Generate the binary (PDF and DOCX) documents of the kag demo corpus.

The demo corpus in ``data/`` describes Copperfinch Robotics, a fictional
company. Markdown, HTML and plain-text documents are stored in the repository
as they are; this script holds the text of the PDF and DOCX documents and
writes them:

    python scripts/make_demo_corpus.py            # writes into ./data
    python scripts/make_demo_corpus.py --out DIR  # writes into DIR

Output is deterministic: running the script twice produces byte-identical
files. PDFs use a fixed creation date; DOCX files get fixed core properties
and fixed zip entry timestamps.

Requires fpdf2 and python-docx.
"""

from __future__ import annotations

import argparse
import io
import zipfile
from datetime import UTC, datetime
from pathlib import Path

FIXED_DATE = datetime(2025, 1, 1, tzinfo=UTC)
ZIP_DATE = (2025, 1, 1, 0, 0, 0)
AUTHOR = "Copperfinch Robotics (fictional)"

# A document is a list of blocks. A PDF document is a list of pages, each a
# list of blocks; every page after the first starts with a real page break.
# Block kinds:
#   ("h1", text) ("h2", text) ("p", text) ("ul", [items]) ("ol", [items])
#   ("kv", [(label, value), ...])          label: value lines
#   ("table", [header...], [[cell...], ...])  DOCX only

# ---------------------------------------------------------------------------
# PDF documents
# ---------------------------------------------------------------------------

INC_3107 = {
    "path": "incidents/inc-3107-magpie-certificate-expiry.pdf",
    "title": "Postmortem INC-3107: Magpie broker TLS certificate expiry",
    "footer": "Copperfinch Robotics - Postmortem INC-3107 - Internal",
    "pages": [
        [
            ("h1", "Postmortem INC-3107: Magpie broker TLS certificate expiry"),
            (
                "kv",
                [
                    ("Incident ID", "INC-3107"),
                    ("Date", "2025-02-11"),
                    ("Severity", "SEV1"),
                    ("Duration", "1 hour 47 minutes (14:02 to 15:49 UTC)"),
                    ("Incident commander", "Priya Raman (SRE)"),
                    ("Services affected", "Magpie message broker, order service, Kestrel dispatch service"),
                    ("Owning team", "Platform team (lead: Ines Okafor)"),
                    ("Status", "Final, published 2025-02-18; action items updated 2025-05-06"),
                ],
            ),
            ("h2", "Summary"),
            (
                "p",
                "On 11 February 2025 at 14:02 UTC the TLS server certificate of the "
                "Magpie broker cluster in the us-west-2 region expired. Incident INC-3107 "
                "was caused by an expired TLS certificate on the Magpie message broker. "
                "From that moment the order service and the Kestrel dispatch service could "
                "no longer open connections to Magpie, so no new orders reached Wren robots "
                "in any United States customer site. Robots finished the tasks they already "
                "held and then waited in their parking positions. Service was restored at "
                "15:49 UTC after the Platform team renewed the certificate by hand.",
            ),
            (
                "p",
                "The certificate should have been renewed automatically 30 days before "
                "expiry. The cert-renewer job had been failing silently since 20 January "
                "2025, when a change to its service account removed its permission to "
                "request certificates from the Copperfinch Internal CA. Nothing alerted on "
                "the failing job or on the approaching expiry date.",
            ),
            ("h2", "Impact"),
            (
                "ul",
                [
                    "37 customer sites in the us-west-2 region could not dispatch new work for "
                    "1 hour 47 minutes. Sites in eu-central-1 were not affected because their "
                    "Magpie certificates had been issued on a different date.",
                    "About 21,400 orders were delayed. No orders were lost: the order service "
                    "kept them in its outbox table and published them once Magpie was reachable.",
                    "Usage events for the outage window reached Heron late but complete, so "
                    "February invoices were correct.",
                    "Kestrel monthly availability for February was 99.75 percent, below the "
                    "service level objective (SLO) of 99.9 percent.",
                    "Six customers requested service credits under their contracts.",
                ],
            ),
        ],
        [
            ("h2", "Timeline (all times UTC, 2025-02-11)"),
            (
                "ul",
                [
                    "14:02 - The Magpie server certificate in us-west-2 expires. Client "
                    "connections begin to fail with 'certificate has expired'.",
                    "14:04 - Existing connections are unaffected at first; new connections fail. "
                    "Kestrel dispatch pods that restart during a routine scale-down cannot "
                    "reconnect.",
                    "14:10 - The queue depth alert stays silent because nothing is being "
                    "published, so no alert fires at all.",
                    "14:31 - First signal: a customer calls Customer Support to report idle robots.",
                    "14:34 - Customer Support escalates to the Fleet Software on-call engineer, "
                    "who finds TLS errors in the dispatch logs and pages platform-primary.",
                    "14:38 - SEV1 declared. Priya Raman takes the incident commander role. Status page updated.",
                    "14:52 - Root cause identified: expired server certificate on all three Magpie nodes in us-west-2.",
                    "15:05 - First attempt to run the cert-renewer job fails with a permission "
                    "error. The team finds the service account change from 20 January.",
                    "15:21 - Role binding restored. Certificate renewed on magpie-0.",
                    "15:37 - Certificates renewed on magpie-1 and magpie-2.",
                    "15:41 - All Kestrel dispatch pods reconnect at once; a short burst of "
                    "connection churn slows the backlog.",
                    "15:49 - Backlog of delayed orders drained to normal levels. Incident resolved.",
                ],
            ),
            ("h2", "Root cause"),
            (
                "p",
                "Magpie certificates are issued by the Copperfinch Internal CA with a "
                "validity of 90 days. The cert-renewer job is responsible for renewing "
                "them 30 days before expiry. On 20 January 2025 an infrastructure cleanup "
                "replaced the job's service account with a new one that lacked the "
                "certificate-requester role. From then on every run failed with a "
                "permission error. The job was marked as failed in Kubernetes, but no "
                "alert watched its status, and no alert watched certificate expiry dates "
                "on the broker itself.",
            ),
            ("h2", "Contributing factors"),
            (
                "ul",
                [
                    "The Kestrel dispatch service had no alert for 'no messages received', so "
                    "silence from Magpie looked like a quiet afternoon.",
                    "ADR-007 recorded that certificate rotation would become an operational "
                    "responsibility, but the follow-up work to monitor it was never scheduled.",
                    "The Magpie runbook did not describe manual certificate renewal, so the "
                    "team worked out the commands during the incident.",
                ],
            ),
        ],
        [
            ("h2", "What went well"),
            (
                "ul",
                [
                    "No orders were lost, thanks to the outbox table in the order service.",
                    "Customer Support escalated quickly once customers called, and the "
                    "communications lead kept the status page current every 30 minutes.",
                    "The EU region was unaffected, which helped confirm the diagnosis.",
                ],
            ),
            ("h2", "What went badly"),
            (
                "ul",
                [
                    "We learned about the outage from a customer, 29 minutes after it began.",
                    "Manual renewal took longer than it should have because the procedure was not written down.",
                    "All dispatch pods reconnected at the same moment, which slowed recovery.",
                ],
            ),
            ("h2", "Action items"),
            (
                "ul",
                [
                    "AI-1 (critical): Alert when any Magpie certificate is within 21 days of "
                    "expiry and page at 7 days. Owner: Ines Okafor. Due 2025-02-28. Done.",
                    "AI-2 (critical): Heartbeat alert for the cert-renewer job; page if no "
                    "successful run for 24 hours. Owner: Ines Okafor. Due 2025-02-28. Done.",
                    "AI-3: Add a 'no messages for 5 minutes during operating hours' alert to "
                    "the Kestrel dispatch service. Owner: Tomasz Brandt. Shipped in Kestrel 4.1.",
                    "AI-4: Reconnect to Magpie with exponential backoff and jitter. Owner: "
                    "Tomasz Brandt. Shipped in Kestrel 4.2.",
                    "AI-5: Document manual certificate renewal in the Magpie runbook. Owner: "
                    "Lucas Ferreira. Done 2025-03-04.",
                    "AI-6: Extend certificate expiry monitoring to every internal service, not "
                    "only Magpie. Owner: Priya Raman. Due 2025-04-30.",
                ],
            ),
            ("h2", "Lessons"),
            (
                "p",
                "Automation that fails silently is worse than no automation, because it "
                "removes the human habit of checking. Every scheduled job that protects "
                "production now needs an owner, a heartbeat and an alert. This postmortem "
                "is blameless: the service account change was reviewed and approved, and "
                "the missing piece was monitoring, not care.",
            ),
        ],
    ],
}

INC_3152 = {
    "path": "incidents/inc-3152-osprey-rate-limit.pdf",
    "title": "Postmortem INC-3152: Osprey gateway rate limit misconfiguration",
    "footer": "Copperfinch Robotics - Postmortem INC-3152 - Internal",
    "pages": [
        [
            ("h1", "Postmortem INC-3152: Osprey gateway rate limit misconfiguration"),
            (
                "kv",
                [
                    ("Incident ID", "INC-3152"),
                    ("Date", "2025-04-03"),
                    ("Severity", "SEV2"),
                    ("Duration", "52 minutes (09:14 to 10:06 UTC)"),
                    ("Incident commander", "Lucas Ferreira (SRE)"),
                    ("Services affected", "Osprey API gateway"),
                    ("Owning team", "Platform team (lead: Ines Okafor)"),
                    ("Status", "Final, published 2025-04-09; action items updated 2025-04-15"),
                ],
            ),
            ("h2", "Summary"),
            (
                "p",
                "On 3 April 2025 a configuration change to the Osprey gateway set the "
                "default rate limit to 90 requests per minute per API key instead of the "
                "published 900. The change was part of a pull request that added the new "
                "Enterprise limit of 3,000 requests per minute, and a zero was lost while "
                "editing the default. The change went to all regions at once. For 52 "
                "minutes about 29 percent of all Osprey API requests were rejected with "
                "HTTP 429 Too Many Requests.",
            ),
            ("h2", "Impact"),
            (
                "ul",
                [
                    "About 29 percent of API requests failed with HTTP 429 between 09:14 and "
                    "10:06 UTC. Customers that retry on 429 saw delays rather than failures.",
                    "Around 60 customer integrations were affected; order intake slowed at 14 "
                    "sites where integrations did not retry.",
                    "Robots already holding tasks were not affected. Kestrel, Heron and Magpie "
                    "were healthy throughout.",
                ],
            ),
            ("h2", "Timeline (UTC, 2025-04-03)"),
            (
                "ul",
                [
                    "09:12 - Config release 2025-04-03.1 merged and applied to all regions.",
                    "09:14 - 429 responses rise from under 0.5 percent to 29 percent.",
                    "09:22 - Alert 'osprey-429-ratio above 5 percent' pages platform-primary.",
                    "09:31 - SEV2 declared; Lucas Ferreira is incident commander.",
                    "09:48 - 'ospreyctl limits show' reveals a default of 90 rpm.",
                    "09:58 - Rollback to the previous config release started.",
                    "10:06 - 429 ratio back to normal. Incident resolved.",
                ],
            ),
        ],
        [
            ("h2", "Root cause"),
            (
                "p",
                "Osprey reads its rate limits from the osprey-config repository. The "
                "configuration had no schema validation, so a default limit of 90 was "
                "accepted as valid. The pull request had two approvals, but reviewers "
                "focused on the new Enterprise section and did not notice the changed "
                "default. The release process applied configuration to every region at "
                "the same time, so there was no canary stage that could have caught the "
                "problem before it reached all customers.",
            ),
            (
                "p",
                "Osprey uses Redis for rate-limit counters, and the Redis cluster behaved "
                "correctly: it enforced exactly the limit it was given. Rate limiting "
                "itself is implemented as a token bucket per API key, as agreed in the "
                "architecture review of 2024.",
            ),
            ("h2", "Action items"),
            (
                "ul",
                [
                    "AI-1 (critical): Add schema validation to osprey-config that rejects a "
                    "default limit below 300 requests per minute. Owner: Ines Okafor. Done "
                    "2025-04-11.",
                    "AI-2 (critical): Apply configuration changes to the canary pool 30 "
                    "minutes before all regions. Owner: Ines Okafor. Done 2025-04-15.",
                    "AI-3: Replay one hour of recorded traffic against every config change in "
                    "CI and fail if the 429 ratio rises above 2 percent. Owner: Lucas Ferreira. "
                    "Due 2025-05-15.",
                    "AI-4: Lower the 429 ratio alert threshold from 5 to 3 percent and page "
                    "immediately. Owner: Lucas Ferreira. Done 2025-04-07.",
                    "AI-5: Update the Osprey runbook with a section on 429 spikes. Owner: "
                    "Lucas Ferreira. Done 2025-04-15.",
                ],
            ),
            ("h2", "Lessons"),
            (
                "p",
                "Configuration is code and deserves the same safety nets as code: "
                "validation, staged rollout and fast rollback. Detection took 8 minutes "
                "and diagnosis another 26; the staged rollout added in AI-2 would have "
                "limited the impact to the canary pool.",
            ),
        ],
    ],
}

INC_3188 = {
    "path": "incidents/inc-3188-heron-duplicate-charges.pdf",
    "title": "Postmortem INC-3188: Duplicate charges after Tally database failover",
    "footer": "Copperfinch Robotics - Postmortem INC-3188 - Confidential",
    "pages": [
        [
            ("h1", "Postmortem INC-3188: Duplicate charges after Tally database failover"),
            (
                "kv",
                [
                    ("Incident ID", "INC-3188"),
                    ("Date", "2025-06-19"),
                    ("Severity", "SEV1"),
                    ("Faulty behaviour", "38 minutes (02:17 to 02:55 UTC)"),
                    ("Detected", "07:40 UTC, from a customer ticket"),
                    ("Incident commander", "Priya Raman (SRE)"),
                    ("Services affected", "Heron billing service, Tally ledger database"),
                    ("Owning team", "Billing team (lead: Samir Haddad)"),
                    ("Status", "Final, published 2025-06-26; action items updated 2025-07-10"),
                ],
            ),
            ("h2", "Summary"),
            (
                "p",
                "Some Copperfinch customers are billed on the anniversary of their "
                "contract rather than on the 1st of the month. On 19 June 2025 the Heron "
                "billing service started the anniversary billing batch at 02:00 UTC. At "
                "02:17 UTC the primary node of the Tally ledger database stalled on disk "
                "I/O, and Patroni promoted a replica 41 seconds later. Heron had already "
                "sent charges to the payment processor, Paystream, for invoices whose "
                "status had not yet been written to Tally. When Heron reconnected it "
                "retried the finalisation of those invoices and created a second charge "
                "for each of them.",
            ),
            (
                "p",
                "In total 412 invoices were charged twice, with duplicate charges "
                "totalling $186,430. The faulty behaviour lasted 38 minutes, until the "
                "batch completed at 02:55 UTC, but it was not detected until a customer "
                "reported a double charge at 07:40 UTC.",
            ),
            ("h2", "Impact"),
            (
                "ul",
                [
                    "412 invoices for 398 customers were charged twice.",
                    "Duplicate charges totalled $186,430. All of it was refunded by Finance, "
                    "and every refund was completed by 2025-06-24.",
                    "Customer Support handled 117 tickets about the duplicate charges over four days.",
                    "No data was lost; Tally held a correct record of every invoice.",
                ],
            ),
        ],
        [
            ("h2", "Timeline (UTC, 2025-06-19)"),
            (
                "ul",
                [
                    "02:00 - Anniversary billing batch starts; 1,940 invoices to finalise.",
                    "02:17 - The Tally primary stalls on disk I/O. Heron's writes time out.",
                    "02:17 - Patroni promotes a replica to primary after 41 seconds.",
                    "02:18 - Heron reconnects. Its retry logic re-runs the finalise step for "
                    "invoices whose status was still 'finalising'. For 412 of them Paystream "
                    "had already accepted the first charge.",
                    "02:55 - Batch completes. No alert fires: the batch reports success.",
                    "07:40 - A customer opens a ticket reporting two identical charges.",
                    "07:52 - Customer Support escalates to billing-primary; SEV1 declared.",
                    "07:58 - Billing paused with 'heronctl billing pause'.",
                    "09:30 - Reconciliation against Paystream produces the list of 412 affected invoices.",
                    "11:15 - Finance begins refunds. Affected customers are emailed.",
                    "2025-06-24 - Last refund completed.",
                ],
            ),
            ("h2", "Root cause"),
            (
                "p",
                "Heron's finalise step did two things that were not atomic: it created a "
                "charge at Paystream and then recorded the charge in Tally. Requests to "
                "Paystream did not carry an idempotency key. When the Tally failover "
                "interrupted the second step, Heron could not tell whether the charge had "
                "been created, and its retry policy assumed it had not. The billing "
                "service depends on the Tally ledger database for exactly this knowledge, "
                "so losing the database at the wrong moment meant losing track of money "
                "already moved.",
            ),
            ("h2", "Contributing factors"),
            (
                "ul",
                [
                    "Tally failover had never been tested during a billing batch. A quarterly "
                    "failover game day was proposed at the architecture review on 2025-05-14 "
                    "but deferred to the third quarter.",
                    "No reconciliation job compared Paystream charges with Tally invoices, so "
                    "the duplicates were found by a customer five hours later.",
                    "The batch reported success because every invoice did end up finalised.",
                ],
            ),
        ],
        [
            ("h2", "What went well"),
            (
                "ul",
                [
                    "Once detected, billing was paused within 6 minutes.",
                    "Tally's records were complete, which made the list of affected invoices "
                    "exact and the refunds straightforward.",
                    "Finance and Customer Support coordinated a single clear message to customers.",
                ],
            ),
            ("h2", "Action items"),
            (
                "ul",
                [
                    "AI-1 (critical): Send an idempotency key with every Paystream call and "
                    "record a charge intent in Tally before calling Paystream. Owner: Samir "
                    "Haddad. Decision recorded in ADR-019 (accepted 2025-07-02). Done "
                    "2025-07-08.",
                    "AI-2 (critical): Nightly duplicate charge detector comparing Paystream "
                    "charges with Tally invoices, paging billing-primary on any mismatch. "
                    "Owner: Samir Haddad. Done 2025-06-30.",
                    "AI-3 (critical): Run the reconciliation immediately after any Tally "
                    "failover. Owner: Priya Raman. Done 2025-07-10 (Heron runbook updated).",
                    "AI-4: Quarterly Tally failover game day during a simulated billing batch. "
                    "Owner: Samir Haddad. First game day scheduled for 2025-08-20.",
                    "AI-5: Investigate the disk I/O stall on the Tally primary with the cloud "
                    "provider. Owner: Lucas Ferreira. Due 2025-07-31.",
                ],
            ),
            ("h2", "Lessons"),
            (
                "p",
                "Any operation that moves money must be safe to retry. Retries are "
                "everywhere in a distributed system: in client libraries, in load "
                "balancers and in our own code. We now treat 'what happens if this step "
                "is retried?' as a required question in design reviews for the Heron "
                "billing service and for any other service that calls Paystream.",
            ),
        ],
    ],
}

SECURITY_ASSESSMENT = {
    "path": "engineering/security-assessment-2025.pdf",
    "title": "2025 External Security Assessment: Summary Report",
    "footer": "Copperfinch Robotics - 2025 Security Assessment - Confidential",
    "pages": [
        [
            ("h1", "2025 External Security Assessment: Summary Report"),
            (
                "kv",
                [
                    ("Prepared for", "Copperfinch Robotics, Inc."),
                    ("Prepared by", "Bramblegate Assurance LLP (independent assessor)"),
                    ("Fieldwork", "2025-05-05 to 2025-05-23"),
                    ("Report date", "2025-06-06"),
                    ("Copperfinch sponsor", "Mateo Lindqvist, Chief Information Security Officer"),
                    ("Classification", "Confidential"),
                ],
            ),
            ("h2", "Executive summary"),
            (
                "p",
                "Bramblegate Assurance was engaged by Copperfinch Robotics to perform its "
                "annual independent security assessment. We tested the customer-facing "
                "Starling Customer Portal and Osprey API, the internal Magpie message "
                "broker, the Heron billing service and its Tally ledger database, the "
                "Plover firmware update service, and the corporate identity and VPN "
                "setup.",
            ),
            (
                "p",
                "Our overall rating is Satisfactory with exceptions. Copperfinch has a "
                "mature security programme: two-factor authentication is enforced on all "
                "accounts we sampled, two-factor authentication is required for VPN "
                "access, production access requires hardware security keys, and "
                "customer data is encrypted in transit and at rest. We identified 14 "
                "findings: 2 high, 5 medium and 7 low. No critical findings were "
                "identified, and we found no evidence of compromise.",
            ),
            (
                "p",
                "The two high findings concern the Starling Customer Portal, where "
                "sessions were not invalidated after a password reset, and the Plover "
                "firmware update service, where the firmware signing key was stored on a "
                "build server rather than in a hardware security module (HSM). H-1 has "
                "been fixed; H-2 is being remediated. See the remediation status "
                "section.",
            ),
        ],
        [
            ("h2", "Scope and methodology"),
            (
                "ul",
                [
                    "External penetration testing of the Osprey API and the Starling "
                    "Customer Portal in both regions, using test accounts on a staging tenant.",
                    "Authenticated review of the Magpie broker configuration, including TLS "
                    "settings and the RabbitMQ management interface.",
                    "Configuration and access review of the Tally ledger database and its backups.",
                    "Review of the Plover firmware signing and release pipeline.",
                    "Sampling of 60 employee accounts for two-factor authentication, access "
                    "reviews and leaver processing.",
                    "Interviews with the Security, Platform, Billing and Portal teams.",
                ],
            ),
            (
                "p",
                "Findings are rated High, Medium or Low based on likelihood and impact. "
                "Robot hardware and the physical security of customer sites were out of "
                "scope for this engagement.",
            ),
            ("h2", "Summary of findings"),
            (
                "ul",
                [
                    "H-1 (High): Starling sessions not invalidated after password reset.",
                    "H-2 (High): Plover firmware signing key stored on build server, not in HSM.",
                    "M-1 (Medium): Osprey error responses reveal internal hostnames.",
                    "M-2 (Medium): Magpie management interface reachable from the corporate "
                    "VPN with a shared password.",
                    "M-3 (Medium): 9 accounts of departed employees remained active for more "
                    "than 24 hours after departure.",
                    "M-4 (Medium): Tally backup encryption key stored in the same cloud account as the backups.",
                    "M-5 (Medium): No lockout or rate limit on the Starling sign-in endpoint.",
                    "L-1 to L-7 (Low): see the final section.",
                ],
            ),
        ],
        [
            ("h2", "High findings"),
            (
                "p",
                "H-1: Starling sessions not invalidated after password reset. Starling "
                "uses Redis for session storage, and sessions expire after 12 hours of "
                "inactivity. However, when a user changed or reset their password, "
                "existing sessions on other devices remained valid until they expired. "
                "An attacker who had stolen a session cookie would keep access even after "
                "the victim reset their password. Recommendation: delete all of a user's "
                "sessions from Redis on password change or reset. Owner: Nadia Kowalczyk "
                "(Portal team). Agreed due date: 2025-07-15.",
            ),
            (
                "p",
                "H-2: Plover firmware signing key stored on the build server. The private "
                "key used to sign Wren firmware images was stored encrypted on the Plover "
                "build server, with the passphrase in the build system's secret store. A "
                "compromise of the build server could allow an attacker to sign "
                "malicious firmware that Wren robots would accept. Copperfinch policy "
                "classifies firmware signing keys as Restricted and requires an HSM. "
                "Recommendation: move the key into an HSM and require two-person "
                "approval for each signing operation. Owner: Greta Solberg (Hardware). "
                "Agreed due date: 2025-08-31.",
            ),
            ("h2", "Medium findings"),
            (
                "p",
                "M-1: Osprey error responses for malformed requests included the "
                "hostname of the backend pod. Recommendation: return generic error "
                "bodies with a request ID only. Owner: Ines Okafor.",
            ),
            (
                "p",
                "M-2: The RabbitMQ management interface of the Magpie broker was "
                "reachable from the corporate VPN and protected by a shared password "
                "rather than individual accounts. Recommendation: restrict it to the "
                "admin bastion and require single sign-on with two-factor "
                "authentication. Owner: Ines Okafor.",
            ),
            (
                "p",
                "M-3: Policy requires access to be revoked within 24 hours of an "
                "employee's departure. In our sample, 9 accounts of departed employees "
                "remained active for between 2 and 11 days. Recommendation: automate "
                "deprovisioning from the HR system, Burrow. Owner: Mateo Lindqvist.",
            ),
            (
                "p",
                "M-4: Tally backups are encrypted, but the encryption key is held in the "
                "same cloud account as the backups. Recommendation: move the key to a "
                "separate account with restricted access. Owner: Samir Haddad.",
            ),
            (
                "p",
                "M-5: The Starling sign-in endpoint had no account lockout or rate "
                "limiting, allowing unlimited password guessing. Recommendation: lock "
                "accounts after repeated failures. Owner: Nadia Kowalczyk.",
            ),
        ],
        [
            ("h2", "Low findings"),
            (
                "ul",
                [
                    "L-1: Some internal TLS endpoints still accept TLS 1.1.",
                    "L-2: Security headers missing on two static Starling pages.",
                    "L-3: Osprey access logs retained for 400 days, longer than the 365 days in the retention policy.",
                    "L-4: Three developer laptops sampled were 9 to 12 days behind on "
                    "operating system updates (policy: 7 days).",
                    "L-5: The vendor review record for one analytics tool was missing.",
                    "L-6: Plover release notes expose internal build numbers.",
                    "L-7: Break-glass access grants were not reviewed after two incidents.",
                ],
            ),
            ("h2", "Remediation status (as of 2025-08-15)"),
            (
                "ul",
                [
                    "H-1: Closed 2025-07-09. Password change now signs out all other sessions.",
                    "H-2: In progress. HSM installed; migration of the signing key planned for 2025-08-28.",
                    "M-1: Closed 2025-06-20.",
                    "M-2: Closed 2025-06-12. Management interface restricted to the admin bastion with SSO and 2FA.",
                    "M-3: In progress. Automated deprovisioning from Burrow in testing.",
                    "M-4: Closed 2025-07-30.",
                    "M-5: Closed 2025-07-09. Accounts lock for 30 minutes after 10 failed attempts within 15 minutes.",
                    "Low findings: 5 of 7 closed; L-3 and L-7 scheduled for the third quarter.",
                ],
            ),
            ("h2", "Conclusion"),
            (
                "p",
                "Copperfinch's security controls are generally well designed and "
                "consistently applied. The high findings were addressed promptly. We "
                "recommend that the next assessment, planned for May 2026, include a "
                "physical security review of one customer site running Wren robots and "
                "a follow-up test of the Plover signing process once the HSM migration "
                "is complete.",
            ),
        ],
    ],
}

WREN_DATASHEET = {
    "path": "products/wren-datasheet.pdf",
    "title": "Wren Autonomous Mobile Robot: Technical Datasheet",
    "footer": "Copperfinch Robotics - Wren datasheet rev. C (2025-05)",
    "pages": [
        [
            ("h1", "Wren Autonomous Mobile Robot: Technical Datasheet"),
            (
                "p",
                "Wren is the autonomous mobile robot (AMR) from Copperfinch Robotics for "
                "tote, carton, pallet and cart handling in warehouses. Two models share "
                "one software platform and can operate together in the same fleet under "
                "Kestrel Fleet Manager. This datasheet applies to hardware revision C "
                "and firmware 7.x.",
            ),
            ("h2", "Wren W150"),
            (
                "kv",
                [
                    ("Rated payload", "150 kg"),
                    ("Maximum speed", "1.8 m/s"),
                    ("Runtime", "up to 9 hours"),
                    ("Robot weight", "92 kg"),
                    ("Dimensions (L x W x H)", "980 x 640 x 340 mm"),
                    ("Turning radius", "zero (differential drive, turns in place)"),
                    ("Typical use", "totes, cartons, shelf units up to 150 kg"),
                ],
            ),
            ("h2", "Wren W300"),
            (
                "kv",
                [
                    ("Rated payload", "300 kg"),
                    ("Maximum speed", "1.5 m/s"),
                    ("Runtime", "up to 7.5 hours"),
                    ("Robot weight", "138 kg"),
                    ("Dimensions (L x W x H)", "1,210 x 810 x 360 mm"),
                    ("Towing capacity", "up to 500 kg with the tow hitch accessory"),
                    ("Typical use", "pallets, carts, heavy replenishment"),
                ],
            ),
            ("h2", "Battery and charging (both models)"),
            (
                "kv",
                [
                    ("Battery", "48 V lithium iron phosphate (LiFePO4)"),
                    ("Charge time", "0 to 80 percent in 55 minutes"),
                    ("Charging", "automatic docking on a Copperfinch dock"),
                    ("Battery life", "warranted for 3,000 charge cycles"),
                    ("Battery supplier", "Voltaris Energy"),
                ],
            ),
        ],
        [
            ("h2", "Navigation and safety"),
            (
                "kv",
                [
                    ("Sensors", "2 safety-rated lidar scanners, 4 depth cameras"),
                    ("Navigation", "natural-feature SLAM; no floor markers or reflectors"),
                    ("Emergency stop", "2 physical buttons plus wireless stop"),
                    ("Obstacle stop", "within 0.5 m at full speed"),
                    ("Safety standard", "ISO 3691-4 (driverless industrial trucks)"),
                    ("Speed zones", "configurable per zone in Kestrel 4.3 and later"),
                ],
            ),
            ("h2", "Environment"),
            (
                "kv",
                [
                    ("Ingress protection", "IP54"),
                    ("Operating temperature", "0 to 40 degrees Celsius"),
                    ("Cold-store variant", "down to -25 degrees Celsius, on request"),
                    ("Floor", "sealed concrete, max. gradient 3 percent"),
                ],
            ),
            ("h2", "Connectivity and software"),
            (
                "kv",
                [
                    ("Wireless", "Wi-Fi 6 or private 5G (5G kits from Skein Networks)"),
                    ("Fleet management", "Kestrel Fleet Manager 4.0 or later"),
                    ("Firmware updates", "over the air via the Plover update service, signed images only"),
                    ("Telemetry", "battery, motor and sensor health once per second"),
                    ("Integration", "through the Osprey API (REST, version 2)"),
                ],
            ),
            ("h2", "Warranty and service"),
            (
                "p",
                "Every Wren includes a 3-year standard warranty covering parts and "
                "labour. Enterprise support plans include on-site response within one "
                "business day in core service regions. Field technicians carry spare "
                "lidar units, drive modules and battery packs for same-day swaps.",
            ),
            (
                "p",
                "Specifications are subject to change. Copperfinch Robotics is a "
                "fictional company; this datasheet is demonstration material.",
            ),
        ],
    ],
}

PDF_DOCS = [INC_3107, INC_3152, INC_3188, SECURITY_ASSESSMENT, WREN_DATASHEET]

# ---------------------------------------------------------------------------
# DOCX documents
# ---------------------------------------------------------------------------

ADR_007 = {
    "path": "engineering/adr-007-magpie-rabbitmq.docx",
    "title": "ADR-007: Use RabbitMQ for the Magpie message broker",
    "blocks": [
        ("title", "ADR-007: Use RabbitMQ for the Magpie message broker"),
        (
            "kv",
            [
                ("Status", "Accepted"),
                ("Date", "2023-09-12"),
                (
                    "Deciders",
                    "Ines Okafor (Platform), Tomasz Brandt (Fleet Software), Priya Raman (SRE), Yuki Arashiro (CTO)",
                ),
                ("Consulted", "Samir Haddad (Billing)"),
            ],
        ),
        ("h1", "Context"),
        (
            "p",
            "In 2023 the order service sent each order to the Kestrel dispatch service "
            "with a synchronous HTTP call. During the 2022 peak season, timeouts between "
            "the two services caused orders to be dropped or sent twice, and every "
            "Kestrel deployment briefly interrupted order intake. Usage data for billing "
            "travelled to Heron once a night as a file transfer, which meant invoices "
            "could not be checked until the following day.",
        ),
        (
            "p",
            "We need a message broker that decouples the order service from Kestrel "
            "dispatch, survives the loss of a single machine without losing messages, and "
            "can also carry usage events to Heron and robot alerts to Starling. Projected "
            "peak load for the next three years is about 20,000 messages per second "
            "across both regions.",
        ),
        ("h1", "Options considered"),
        ("h2", "Option 1: Apache Kafka"),
        (
            "p",
            "Kafka offers very high throughput and long retention. However, our workloads "
            "are task queues with per-message acknowledgement and routing rather than "
            "event streams, and nobody on the Platform team had run Kafka in production.",
        ),
        ("h2", "Option 2: RabbitMQ with quorum queues"),
        (
            "p",
            "RabbitMQ supports flexible routing through exchanges, per-message "
            "acknowledgement, dead-letter queues and replicated quorum queues. Two Platform "
            "engineers had operated it at previous employers. Its throughput comfortably "
            "covers the projected peak.",
        ),
        ("h2", "Option 3: A managed cloud queue"),
        (
            "p",
            "A managed queue would remove operational work, but it would tie the design to "
            "one cloud provider's feature set, offers weaker routing, and would behave "
            "differently in our two regions.",
        ),
        ("h1", "Decision"),
        (
            "p",
            "We will build the Magpie broker on RabbitMQ, running a cluster of three nodes "
            "in each region with quorum queues. The Magpie broker connects the order "
            "service and the Kestrel dispatch service. Kestrel will also publish usage "
            "events to Magpie for the Heron billing service, and robot alerts for the "
            "Starling Customer Portal. The Platform team owns Magpie. All client "
            "connections use mutual TLS with certificates from the Copperfinch Internal "
            "CA.",
        ),
        ("h1", "Consequences"),
        ("h2", "Positive"),
        (
            "ul",
            [
                "Orders are no longer lost when Kestrel dispatch is deployed or briefly "
                "unavailable; they wait in the queue.",
                "Heron receives usage events within seconds instead of once a night.",
                "Dead-letter queues give a clear place to inspect failed messages.",
            ],
        ),
        ("h2", "Negative"),
        (
            "ul",
            [
                "Magpie becomes a tier 0 dependency: if it is down, no new work reaches Wren robots.",
                "Certificate rotation for mutual TLS becomes an operational responsibility of "
                "the Platform team and must be monitored.",
                "We will revisit this decision if sustained load exceeds 50,000 messages per second.",
            ],
        ),
        ("h1", "Addendum (2025-03-04)"),
        (
            "p",
            "Incident INC-3107 on 2025-02-11 showed that certificate rotation was not "
            "monitored, as this ADR had warned. Certificate expiry alerts at 21 and 7 days "
            "and a heartbeat for the cert-renewer job have since been added. The decision "
            "itself stands.",
        ),
    ],
}

ADR_019 = {
    "path": "engineering/adr-019-heron-idempotency-keys.docx",
    "title": "ADR-019: Idempotency keys for all Heron payment calls",
    "blocks": [
        ("title", "ADR-019: Idempotency keys for all Heron payment calls"),
        (
            "kv",
            [
                ("Status", "Accepted"),
                ("Date", "2025-07-02"),
                ("Deciders", "Samir Haddad (Billing), Priya Raman (SRE), Yuki Arashiro (CTO)"),
                ("Consulted", "Helen Marchetti (CFO), Mateo Lindqvist (Security)"),
                ("Related", "Postmortem INC-3188"),
            ],
        ),
        ("h1", "Context"),
        (
            "p",
            "During incident INC-3188 on 2025-06-19, a failover of the Tally ledger "
            "database interrupted the Heron billing service between creating a charge at "
            "Paystream and recording that charge in Tally. Heron's retry logic could not "
            "tell whether the charge existed and created a second one. 412 invoices were "
            "charged twice and Finance refunded $186,430.",
        ),
        (
            "p",
            "Heron depends on the Tally ledger database as its source of truth, but the "
            "payment itself happens at an external system. Any design that treats the two "
            "steps as one atomic operation is wrong; the question is how to make the "
            "non-atomic sequence safe to retry.",
        ),
        ("h1", "Decision"),
        (
            "p",
            "Every call from Heron to Paystream will carry an idempotency key. The key is "
            "derived from the invoice ID and the operation type (for example "
            "'charge' or 'refund'), so that a retry of the same operation on the same "
            "invoice always uses the same key. Paystream retains idempotency keys for 72 "
            "hours and returns the original result for a repeated key instead of "
            "performing the operation again.",
        ),
        (
            "p",
            "In addition, Heron will write a charge intent row to Tally before calling "
            "Paystream, and update it with the Paystream charge ID afterwards. On retry, "
            "Heron first reads the intent: if it is marked complete, no call is made; if it "
            "is pending, the call is repeated with the same idempotency key.",
        ),
        ("h1", "Alternatives considered"),
        ("h2", "Disable automatic retries"),
        (
            "p",
            "Rejected. Transient network errors are common, and without retries many "
            "invoices would remain unpaid until someone intervened by hand.",
        ),
        ("h2", "Distributed transaction across Tally and Paystream"),
        (
            "p",
            "Rejected. Paystream does not support two-phase commit, and such a protocol "
            "would make Heron's availability depend on both systems at every step.",
        ),
        ("h2", "Reconciliation only"),
        (
            "p",
            "Rejected as the sole measure. A nightly duplicate charge detector is useful "
            "and has been built, but it finds problems after customers have been charged.",
        ),
        ("h1", "Consequences"),
        (
            "ul",
            [
                "Retried payment operations within 72 hours can never create a second charge.",
                "Each charge takes about 40 ms longer because of the extra Tally write.",
                "Operations that must be retried after more than 72 hours require a manual "
                "check, documented in the Heron runbook.",
                "The same pattern is now recommended for every service that moves money or "
                "triggers irreversible actions, including refunds issued by Finance tooling.",
            ],
        ),
        ("h1", "Rollout"),
        (
            "p",
            "The change was deployed behind a feature flag on 2025-07-07 and enabled for "
            "all customers on 2025-07-08, before the August monthly billing run on "
            "2025-08-01.",
        ),
    ],
}

ARCH_REVIEW_MINUTES = {
    "path": "engineering/architecture-review-minutes-2025-05-14.docx",
    "title": "Architecture Review Board: Minutes of 2025-05-14",
    "blocks": [
        ("title", "Architecture Review Board: Minutes of 14 May 2025"),
        (
            "kv",
            [
                ("Chair", "Yuki Arashiro (CTO)"),
                (
                    "Attendees",
                    "Ines Okafor, Tomasz Brandt, Priya Raman, Samir Haddad, "
                    "Nadia Kowalczyk, Mateo Lindqvist, Greta Solberg",
                ),
                ("Minutes", "Lucas Ferreira"),
                ("Location", "Portland office, room Kittiwake, and video"),
            ],
        ),
        ("h1", "1. Osprey rate limiting after INC-3152"),
        (
            "p",
            "Ines Okafor summarised the follow-up to incident INC-3152 of 3 April, when a "
            "configuration error set the Osprey default limit to 90 requests per minute. "
            "Schema validation (minimum default limit of 300) and the canary stage are in "
            "place. The board confirmed that the published default remains 900 requests "
            "per minute per API key, with 3,000 for the Enterprise plan.",
        ),
        (
            "p",
            "Osprey uses Redis for rate-limit counters. Ines proposed upgrading the "
            "osprey-ratelimit Redis cluster to Redis 7.2 in the third quarter. Priya Raman "
            "asked that the fail-open behaviour, where Osprey allows traffic if Redis is "
            "unavailable, stay as it is but be documented in the runbook.",
        ),
        ("h2", "Decisions"),
        (
            "ul",
            [
                "Default limits unchanged: 900 requests per minute per key, burst 150.",
                "Fail-open behaviour retained; emergency static limit of 600 requests per "
                "minute documented in the Osprey runbook.",
            ],
        ),
        ("h1", "2. Route segment caching in Kestrel"),
        (
            "p",
            "Tomasz Brandt presented the design for caching precomputed route segments in "
            "Kestrel. On the largest customer site, route planning accounts for most of the "
            "dispatch latency, and p95 dispatch latency was 310 ms against a target of "
            "250 ms. Caching route segments optimizes dispatch latency because most tasks "
            "reuse the same aisle segments. The cache will live in Redis, with a time to "
            "live of 10 minutes, and is invalidated whenever the site map is edited.",
        ),
        ("h2", "Decisions"),
        (
            "ul",
            [
                "Approved for Kestrel 4.3, planned for July 2025.",
                "The cache must never be the only copy of anything: a cache miss falls back to full route planning.",
            ],
        ),
        ("h1", "3. Tally failover testing"),
        (
            "p",
            "Samir Haddad proposed a quarterly game day in which the Tally ledger database "
            "is failed over on purpose while a simulated billing batch is running. The "
            "board agreed it was valuable but deferred it to the third quarter because of "
            "the Kestrel 4.3 workload.",
        ),
        (
            "p",
            "Note added on 2025-06-26: this item became an action item of the INC-3188 "
            "postmortem. The first game day is scheduled for 2025-08-20.",
        ),
        ("h1", "4. Preliminary findings of the security assessment"),
        (
            "p",
            "Mateo Lindqvist shared early findings from Bramblegate Assurance, whose "
            "fieldwork runs until 23 May. Two items look likely to be rated high: Starling "
            "sessions are not invalidated after a password reset, and the Plover firmware "
            "signing key is kept on a build server instead of in a hardware security "
            "module. Nadia Kowalczyk and Greta Solberg will own the respective fixes.",
        ),
        ("h1", "Action items"),
        (
            "ul",
            [
                "Ines Okafor: plan the Redis 7.2 upgrade for osprey-ratelimit. Due 2025-06-30.",
                "Lucas Ferreira: document fail-open behaviour in the Osprey runbook. Due 2025-05-30.",
                "Tomasz Brandt: route segment cache in Kestrel 4.3. Due 2025-07-22.",
                "Samir Haddad: draft the Tally failover game day plan. Due 2025-07-31.",
                "Nadia Kowalczyk: design for session invalidation on password change in Starling. Due 2025-06-13.",
                "Greta Solberg: HSM procurement for Plover signing. Due 2025-06-30.",
            ],
        ),
        ("p", "Next meeting: 11 June 2025."),
    ],
}

VENDOR_CONTRACTS = {
    "path": "engineering/vendor-contracts-summary.docx",
    "title": "Vendor Contracts Summary, 2025",
    "blocks": [
        ("title", "Vendor Contracts Summary, 2025"),
        (
            "kv",
            [
                ("Prepared by", "Finance, with input from contract owners"),
                ("Approved by", "Helen Marchetti (CFO)"),
                ("Date", "2025-08-18"),
                ("Classification", "Internal"),
            ],
        ),
        ("h1", "Purpose"),
        (
            "p",
            "This document lists Copperfinch's most important vendor contracts, who owns "
            "each relationship internally, when each contract ends and how much notice is "
            "needed to end or renegotiate it. Every contract has one internal owner, who is "
            "responsible for renewal decisions and for raising problems with the vendor. "
            "Amounts are annual and in US dollars unless stated otherwise.",
        ),
        ("h1", "Contract overview"),
        (
            "table",
            ["Vendor", "Service", "Internal owner", "Contract end", "Annual value", "Notice"],
            [
                [
                    "Amazon Web Services",
                    "Cloud hosting for Kestrel, Osprey, Heron, Magpie, Starling",
                    "Platform (Ines Okafor)",
                    "2027-06-30",
                    "$4.2M commitment",
                    "90 days",
                ],
                [
                    "Voltaris Energy",
                    "LiFePO4 battery packs for Wren",
                    "Hardware (Greta Solberg)",
                    "2026-12-31",
                    "$2.8M",
                    "120 days",
                ],
                [
                    "Skein Networks",
                    "Private 5G kits for customer sites",
                    "Field Operations (Marco Bellini)",
                    "2026-09-30",
                    "$640k",
                    "60 days",
                ],
                [
                    "Paystream",
                    "Payment processing for Heron",
                    "Billing (Samir Haddad)",
                    "2027-03-31",
                    "2.1% + $0.20 per charge (about $310k)",
                    "180 days",
                ],
                [
                    "Bramblegate Assurance",
                    "Annual external security assessment",
                    "Security (Mateo Lindqvist)",
                    "2026-05-31",
                    "$145k",
                    "30 days",
                ],
                [
                    "Burrow HR",
                    "HR information system",
                    "People Operations (Dana Whitfield)",
                    "2026-01-31",
                    "$96k",
                    "60 days",
                ],
                ["Klaxon", "On-call paging and status page", "SRE (Priya Raman)", "2026-08-31", "$52k", "30 days"],
                ["Pennywise", "Expense management", "Finance (Helen Marchetti)", "2025-12-31", "$41k", "30 days"],
                [
                    "Wayfarer Travel",
                    "Business travel booking portal",
                    "Finance (Helen Marchetti)",
                    "2026-04-30",
                    "$38k plus booking fees",
                    "30 days",
                ],
            ],
        ),
        ("h1", "Notes on individual contracts"),
        ("h2", "Amazon Web Services"),
        (
            "p",
            "The cloud commitment covers both the us-west-2 and eu-central-1 regions. The "
            "disk I/O stall on the Tally primary during INC-3188 was raised with the "
            "provider's support team; the investigation concluded on 2025-07-29 with a "
            "recommendation to move Tally to a newer storage volume type, which the "
            "Billing team completed in August.",
        ),
        ("h2", "Paystream"),
        (
            "p",
            "After INC-3188, Finance confirmed in writing that Paystream retains "
            "idempotency keys for 72 hours, which ADR-019 relies on. Paystream waived its "
            "refund fees for the 412 duplicate charges. The 180-day notice period means a "
            "decision about renewal must be made by 2026-10-02.",
        ),
        ("h2", "Voltaris Energy"),
        (
            "p",
            "Voltaris is the sole supplier of Wren battery packs. The contract includes a "
            "warranty of 3,000 charge cycles that matches the warranty we give customers. "
            "The Hardware team is qualifying a second supplier to reduce the risk of "
            "depending on one vendor; no contract has been signed yet.",
        ),
        ("h2", "Pennywise"),
        (
            "p",
            "The Pennywise contract ends on 2025-12-31 and requires 30 days' notice, so "
            "Finance must decide by 2025-12-01 whether to renew. Finance is comparing "
            "Pennywise with two alternatives; employees will be told about any change to "
            "the expense tool at least one month in advance.",
        ),
        ("h1", "Security review of vendors"),
        (
            "p",
            "Every vendor that stores or processes Confidential or Restricted data must pass "
            "a Security team review before signing and every two years afterwards. The "
            "2025 security assessment found one analytics tool without a review record "
            "(finding L-5); that review has since been completed.",
        ),
    ],
}

INCIDENT_REVIEW_MINUTES = {
    "path": "incidents/incident-review-minutes-2025-07-09.docx",
    "title": "Monthly Incident Review: Minutes of 2025-07-09",
    "blocks": [
        ("title", "Monthly Incident Review: Minutes of 9 July 2025"),
        (
            "kv",
            [
                ("Chair", "Priya Raman (SRE)"),
                (
                    "Attendees",
                    "Samir Haddad, Ines Okafor, Tomasz Brandt, Rafael Osei, "
                    "Lucas Ferreira, Helen Marchetti (item 1 only)",
                ),
                ("Minutes", "Lucas Ferreira"),
            ],
        ),
        ("h1", "1. Review of INC-3188 (Heron duplicate charges)"),
        (
            "p",
            "Samir Haddad walked through the postmortem for INC-3188 of 19 June, in which "
            "412 invoices were charged twice after a failover of the Tally ledger "
            "database. Helen Marchetti confirmed that all refunds, totalling $186,430, "
            "were completed by 24 June and that Paystream waived its refund fees.",
        ),
        (
            "p",
            "Rafael Osei reported that Customer Support handled 117 tickets about the "
            "incident. Customers responded well to the proactive email; fewer than ten "
            "escalated to their account managers. He asked that future billing incidents "
            "include Support in the first hour, which the group agreed to add to the "
            "on-call handbook section.",
        ),
        ("h2", "Status of action items"),
        (
            "ul",
            [
                "Idempotency keys and charge intents (ADR-019): done, enabled 2025-07-08.",
                "Nightly duplicate charge detector: done 2025-06-30. It has run nine times without finding a mismatch.",
                "Reconciliation after any Tally failover: runbook updated; due 2025-07-10.",
                "Quarterly Tally failover game day: first session 2025-08-20.",
            ],
        ),
        ("h1", "2. Open action items from earlier incidents"),
        ("h2", "INC-3107 (Magpie certificate expiry, 11 February)"),
        (
            "p",
            "All Magpie-specific items are closed. Item AI-6, extending certificate expiry "
            "monitoring to every internal service, was due on 30 April and was completed "
            "late, on 2 June. Priya noted that it was the only critical-path item in the "
            "second quarter to miss its due date.",
        ),
        ("h2", "INC-3152 (Osprey rate limit, 3 April)"),
        (
            "p",
            "All items are closed. The traffic replay test in CI (AI-3) has blocked two "
            "configuration changes since it went live, both of which would have lowered "
            "limits for a subset of customers by mistake.",
        ),
        ("h1", "3. Second quarter in numbers"),
        (
            "ul",
            [
                "The second quarter of 2025 had 1 SEV1 incident (INC-3188) and 5 SEV2 incidents, including INC-3152.",
                "Median time to acknowledge a SEV1 page: 3 minutes, within the 5-minute target.",
                "Median time to detect was poor for both SEV1 incidents of the year so far: "
                "INC-3107 was found by a customer after 29 minutes and INC-3188 by a customer "
                "after more than five hours.",
                "Kestrel met its 99.9 percent availability SLO in April, May and June.",
            ],
        ),
        ("h1", "4. Discussion: detection"),
        (
            "p",
            "Tomasz Brandt observed that both SEV1 incidents in 2025 were silent failures: "
            "nothing crashed, work simply stopped or was duplicated. The group agreed that "
            "each tier 0 and tier 1 service should have at least one alert based on "
            "business outcomes, such as orders dispatched per minute or charges per "
            "invoice, rather than on technical errors alone.",
        ),
        ("h1", "Decisions"),
        (
            "ul",
            [
                "Every tier 0 and tier 1 service defines an outcome-based alert by "
                "2025-09-30. Owners: service team leads.",
                "Customer Support is paged for any billing incident within the first hour.",
            ],
        ),
        ("p", "Next meeting: 13 August 2025."),
    ],
}

DOCX_DOCS = [ADR_007, ADR_019, ARCH_REVIEW_MINUTES, VENDOR_CONTRACTS, INCIDENT_REVIEW_MINUTES]


# ---------------------------------------------------------------------------
# Writers
# ---------------------------------------------------------------------------


def _check_pdf_text(doc: dict) -> None:
    """Core PDF fonts only cover Latin-1; keep the text plain ASCII."""

    def walk(obj):
        if isinstance(obj, str):
            obj.encode("ascii")  # raises on curly quotes, dashes, etc.
        elif isinstance(obj, (list, tuple)):
            for item in obj:
                walk(item)

    walk([doc["title"], doc["footer"], doc["pages"]])


def write_pdf(doc: dict, out_root: Path) -> Path:
    from fpdf import FPDF

    _check_pdf_text(doc)
    footer_text = doc["footer"]

    class _PDF(FPDF):
        def footer(self):
            self.set_y(-15)
            self.set_font("Helvetica", "", 8)
            self.cell(0, 8, f"{footer_text} - Page {self.page_no()} of {{nb}}", align="C")

    pdf = _PDF(format="A4")
    pdf.set_creation_date(FIXED_DATE)
    pdf.set_title(doc["title"])
    pdf.set_author(AUTHOR)
    pdf.set_creator("scripts/make_demo_corpus.py")
    pdf.set_margins(20, 20, 20)
    pdf.set_auto_page_break(auto=True, margin=20)

    def para(text: str, size: float = 10.5, style: str = "", indent: float = 0):
        pdf.set_font("Helvetica", style, size)
        pdf.set_x(pdf.l_margin + indent)
        pdf.multi_cell(0, size * 0.52, text, new_x="LMARGIN", new_y="NEXT")

    for page in doc["pages"]:
        pdf.add_page()
        for block in page:
            kind = block[0]
            if kind == "h1":
                para(block[1], size=16, style="B")
                pdf.ln(3)
            elif kind == "h2":
                pdf.ln(2)
                para(block[1], size=12.5, style="B")
                pdf.ln(1)
            elif kind == "p":
                para(block[1])
                pdf.ln(2)
            elif kind in ("ul", "ol"):
                for i, item in enumerate(block[1], 1):
                    marker = "-" if kind == "ul" else f"{i}."
                    para(f"{marker} {item}", indent=4)
                    pdf.ln(0.8)
                pdf.ln(1.5)
            elif kind == "kv":
                for label, value in block[1]:
                    para(f"{label}: {value}")
                pdf.ln(2)
            else:
                raise ValueError(f"unsupported PDF block {kind!r}")
    expected = len(doc["pages"])
    if pdf.page_no() != expected:
        raise RuntimeError(f"{doc['path']}: {pdf.page_no()} pages, expected {expected} (a page overflowed; shorten it)")

    path = out_root / doc["path"]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(bytes(pdf.output()))
    return path


def _normalise_zip(data: bytes) -> bytes:
    """Rewrite a zip with fixed timestamps and attributes so bytes are stable."""
    src = zipfile.ZipFile(io.BytesIO(data))
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as dst:
        for info in src.infolist():
            fixed = zipfile.ZipInfo(info.filename, date_time=ZIP_DATE)
            fixed.compress_type = zipfile.ZIP_DEFLATED
            fixed.external_attr = 0o644 << 16
            dst.writestr(fixed, src.read(info.filename))
    return buf.getvalue()


def write_docx(doc: dict, out_root: Path) -> Path:
    import docx

    d = docx.Document()
    props = d.core_properties
    props.title = doc["title"]
    props.author = AUTHOR
    props.last_modified_by = AUTHOR
    props.created = FIXED_DATE.replace(tzinfo=None)
    props.modified = FIXED_DATE.replace(tzinfo=None)
    props.last_printed = FIXED_DATE.replace(tzinfo=None)
    props.revision = 1
    props.comments = "Fictional demo document generated by scripts/make_demo_corpus.py"

    for block in doc["blocks"]:
        kind = block[0]
        if kind == "title":
            d.add_heading(block[1], level=0)
        elif kind == "h1":
            d.add_heading(block[1], level=1)
        elif kind == "h2":
            d.add_heading(block[1], level=2)
        elif kind == "p":
            d.add_paragraph(block[1])
        elif kind == "ul":
            for item in block[1]:
                d.add_paragraph(item, style="List Bullet")
        elif kind == "ol":
            for item in block[1]:
                d.add_paragraph(item, style="List Number")
        elif kind == "kv":
            for label, value in block[1]:
                p = d.add_paragraph()
                p.add_run(f"{label}: ").bold = True
                p.add_run(value)
        elif kind == "table":
            header, rows = block[1], block[2]
            table = d.add_table(rows=1, cols=len(header))
            table.style = "Table Grid"
            for cell, text in zip(table.rows[0].cells, header, strict=True):
                cell.text = ""
                cell.paragraphs[0].add_run(text).bold = True
            for row in rows:
                cells = table.add_row().cells
                for cell, text in zip(cells, row, strict=True):
                    cell.text = text
        else:
            raise ValueError(f"unsupported DOCX block {kind!r}")

    buf = io.BytesIO()
    d.save(buf)
    path = out_root / doc["path"]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(_normalise_zip(buf.getvalue()))
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--out",
        type=Path,
        default=Path(__file__).resolve().parent.parent / "data",
        help="corpus root to write into (default: ./data)",
    )
    args = parser.parse_args(argv)

    for doc in PDF_DOCS:
        print(write_pdf(doc, args.out))
    for doc in DOCX_DOCS:
        print(write_docx(doc, args.out))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
