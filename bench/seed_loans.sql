-- Seed for the dump benchmark: a loan-management schema shaped like a Prisma
-- app (quoted mixed-case names, enums, decimal(14,2) money, timestamp(3),
-- uuid and cuid-like text ids, jsonb, foreign keys), 982,142 rows,
-- generated with generate_series so it loads in well under a minute.
--
-- Deterministic: the same rows every time (ids from md5 of a counter), so
-- output sizes are comparable between runs. Run by bench/lib.sh (for dump.sh, restore.sh) with
-- psql -v ON_ERROR_STOP=1 --single-transaction on an empty database.
-- If you change row counts, change EXPECTED_ROWS and SEED_TAG in lib.sh.

SET client_min_messages = warning;

CREATE TYPE "Role" AS ENUM ('ADMIN', 'LOAN_OFFICER', 'ACCOUNTANT', 'MEMBER', 'AUDITOR');
CREATE TYPE "MemberStatus" AS ENUM ('ACTIVE', 'SUSPENDED', 'LEFT');
CREATE TYPE "LoanStatus" AS ENUM ('PENDING', 'APPROVED', 'REJECTED', 'DISBURSED', 'ACTIVE', 'CLOSED', 'DEFAULTED');
CREATE TYPE "PaymentMethod" AS ENUM ('CASH', 'BANK_TRANSFER', 'MOBILE_MONEY', 'PAYROLL_DEDUCTION', 'CHEQUE');
CREATE TYPE "DocumentType" AS ENUM ('NATIONAL_ID', 'PAYSLIP', 'LOAN_AGREEMENT', 'COLLATERAL', 'BANK_STATEMENT', 'OTHER');

CREATE TABLE "Union" (
    "id" SERIAL PRIMARY KEY,
    "name" TEXT NOT NULL,
    "code" TEXT NOT NULL UNIQUE,
    "registrationNo" TEXT NOT NULL,
    "address" TEXT,
    "createdAt" TIMESTAMP(3) NOT NULL DEFAULT CURRENT_TIMESTAMP
);

CREATE TABLE "Branch" (
    "id" SERIAL PRIMARY KEY,
    "unionId" INTEGER NOT NULL REFERENCES "Union"("id") ON DELETE RESTRICT ON UPDATE CASCADE,
    "name" TEXT NOT NULL,
    "location" TEXT NOT NULL,
    "createdAt" TIMESTAMP(3) NOT NULL DEFAULT CURRENT_TIMESTAMP
);

CREATE TABLE "User" (
    "id" TEXT PRIMARY KEY,
    "email" TEXT NOT NULL,
    "firstName" TEXT NOT NULL,
    "lastName" TEXT NOT NULL,
    "phone" TEXT,
    "passwordHash" TEXT NOT NULL,
    "role" "Role" NOT NULL DEFAULT 'MEMBER',
    "isActive" BOOLEAN NOT NULL DEFAULT true,
    "branchId" INTEGER REFERENCES "Branch"("id") ON DELETE SET NULL ON UPDATE CASCADE,
    "lastLoginAt" TIMESTAMP(3),
    "createdAt" TIMESTAMP(3) NOT NULL DEFAULT CURRENT_TIMESTAMP,
    "updatedAt" TIMESTAMP(3) NOT NULL
);

CREATE TABLE "UnionMember" (
    "id" SERIAL PRIMARY KEY,
    "userId" TEXT NOT NULL REFERENCES "User"("id") ON DELETE RESTRICT ON UPDATE CASCADE,
    "unionId" INTEGER NOT NULL REFERENCES "Union"("id") ON DELETE RESTRICT ON UPDATE CASCADE,
    "memberNumber" TEXT NOT NULL,
    "employer" TEXT,
    "status" "MemberStatus" NOT NULL DEFAULT 'ACTIVE',
    "sharesBalance" DECIMAL(14,2) NOT NULL DEFAULT 0,
    "monthlyContribution" DECIMAL(14,2) NOT NULL,
    "joinedAt" TIMESTAMP(3) NOT NULL,
    "createdAt" TIMESTAMP(3) NOT NULL DEFAULT CURRENT_TIMESTAMP,
    "updatedAt" TIMESTAMP(3) NOT NULL
);

CREATE TABLE "LoanType" (
    "id" SERIAL PRIMARY KEY,
    "name" TEXT NOT NULL,
    "description" TEXT,
    "interestRate" DECIMAL(5,2) NOT NULL,
    "minAmount" DECIMAL(14,2) NOT NULL,
    "maxAmount" DECIMAL(14,2) NOT NULL,
    "maxTermMonths" INTEGER NOT NULL,
    "requiresGuarantor" BOOLEAN NOT NULL DEFAULT false,
    "isActive" BOOLEAN NOT NULL DEFAULT true,
    "createdAt" TIMESTAMP(3) NOT NULL DEFAULT CURRENT_TIMESTAMP
);

CREATE TABLE "Loan" (
    "id" UUID PRIMARY KEY,
    "loanNumber" TEXT NOT NULL,
    "userId" TEXT NOT NULL REFERENCES "User"("id") ON DELETE RESTRICT ON UPDATE CASCADE,
    "loanTypeId" INTEGER NOT NULL REFERENCES "LoanType"("id") ON DELETE RESTRICT ON UPDATE CASCADE,
    "principalAmount" DECIMAL(14,2) NOT NULL,
    "interestRate" DECIMAL(5,2) NOT NULL,
    "termMonths" INTEGER NOT NULL,
    "totalPayable" DECIMAL(14,2) NOT NULL,
    "outstandingBalance" DECIMAL(14,2) NOT NULL,
    "status" "LoanStatus" NOT NULL DEFAULT 'PENDING',
    "purpose" TEXT,
    "approvedById" TEXT REFERENCES "User"("id") ON DELETE SET NULL ON UPDATE CASCADE,
    "approvedAt" TIMESTAMP(3),
    "disbursedAt" TIMESTAMP(3),
    "createdAt" TIMESTAMP(3) NOT NULL DEFAULT CURRENT_TIMESTAMP,
    "updatedAt" TIMESTAMP(3) NOT NULL
);

CREATE TABLE "Guarantor" (
    "id" UUID PRIMARY KEY,
    "loanId" UUID NOT NULL REFERENCES "Loan"("id") ON DELETE CASCADE ON UPDATE CASCADE,
    "memberId" INTEGER NOT NULL REFERENCES "UnionMember"("id") ON DELETE RESTRICT ON UPDATE CASCADE,
    "guaranteedAmount" DECIMAL(14,2) NOT NULL,
    "accepted" BOOLEAN,
    "respondedAt" TIMESTAMP(3),
    "createdAt" TIMESTAMP(3) NOT NULL DEFAULT CURRENT_TIMESTAMP
);

CREATE TABLE "LoanStatusHistory" (
    "id" SERIAL PRIMARY KEY,
    "loanId" UUID NOT NULL REFERENCES "Loan"("id") ON DELETE CASCADE ON UPDATE CASCADE,
    "fromStatus" "LoanStatus",
    "toStatus" "LoanStatus" NOT NULL,
    "changedById" TEXT REFERENCES "User"("id") ON DELETE SET NULL ON UPDATE CASCADE,
    "note" TEXT,
    "changedAt" TIMESTAMP(3) NOT NULL DEFAULT CURRENT_TIMESTAMP
);

CREATE TABLE "RepaymentScheduleItem" (
    "id" UUID PRIMARY KEY,
    "loanId" UUID NOT NULL REFERENCES "Loan"("id") ON DELETE CASCADE ON UPDATE CASCADE,
    "installmentNumber" INTEGER NOT NULL,
    "dueDate" TIMESTAMP(3) NOT NULL,
    "principalDue" DECIMAL(14,2) NOT NULL,
    "interestDue" DECIMAL(14,2) NOT NULL,
    "totalDue" DECIMAL(14,2) NOT NULL,
    "amountPaid" DECIMAL(14,2) NOT NULL DEFAULT 0,
    "isPaid" BOOLEAN NOT NULL DEFAULT false,
    "paidAt" TIMESTAMP(3),
    "createdAt" TIMESTAMP(3) NOT NULL DEFAULT CURRENT_TIMESTAMP
);

CREATE TABLE "Repayment" (
    "id" UUID PRIMARY KEY,
    "loanId" UUID NOT NULL REFERENCES "Loan"("id") ON DELETE CASCADE ON UPDATE CASCADE,
    "scheduleItemId" UUID REFERENCES "RepaymentScheduleItem"("id") ON DELETE SET NULL ON UPDATE CASCADE,
    "amount" DECIMAL(14,2) NOT NULL,
    "method" "PaymentMethod" NOT NULL,
    "reference" TEXT NOT NULL,
    "receivedById" TEXT REFERENCES "User"("id") ON DELETE SET NULL ON UPDATE CASCADE,
    "notes" TEXT,
    "paidAt" TIMESTAMP(3) NOT NULL,
    "createdAt" TIMESTAMP(3) NOT NULL DEFAULT CURRENT_TIMESTAMP
);

CREATE TABLE "LoanDocument" (
    "id" UUID PRIMARY KEY,
    "loanId" UUID NOT NULL REFERENCES "Loan"("id") ON DELETE CASCADE ON UPDATE CASCADE,
    "type" "DocumentType" NOT NULL,
    "fileName" TEXT NOT NULL,
    "mimeType" TEXT NOT NULL,
    "sizeBytes" INTEGER NOT NULL,
    "url" TEXT NOT NULL,
    "uploadedById" TEXT REFERENCES "User"("id") ON DELETE SET NULL ON UPDATE CASCADE,
    "uploadedAt" TIMESTAMP(3) NOT NULL DEFAULT CURRENT_TIMESTAMP
);

CREATE TABLE "AuditLog" (
    "id" BIGSERIAL PRIMARY KEY,
    "userId" TEXT REFERENCES "User"("id") ON DELETE SET NULL ON UPDATE CASCADE,
    "action" TEXT NOT NULL,
    "entity" TEXT NOT NULL,
    "entityId" TEXT,
    "details" JSONB,
    "ipAddress" TEXT,
    "userAgent" TEXT,
    "createdAt" TIMESTAMP(3) NOT NULL DEFAULT CURRENT_TIMESTAMP
);

CREATE TABLE "Notification" (
    "id" UUID PRIMARY KEY,
    "userId" TEXT NOT NULL REFERENCES "User"("id") ON DELETE CASCADE ON UPDATE CASCADE,
    "title" TEXT NOT NULL,
    "message" TEXT NOT NULL,
    "isRead" BOOLEAN NOT NULL DEFAULT false,
    "readAt" TIMESTAMP(3),
    "createdAt" TIMESTAMP(3) NOT NULL DEFAULT CURRENT_TIMESTAMP
);

CREATE TABLE "Setting" (
    "key" TEXT PRIMARY KEY,
    "value" JSONB NOT NULL,
    "updatedAt" TIMESTAMP(3) NOT NULL
);

-- Small tables ---------------------------------------------------------------

INSERT INTO "Union" ("name", "code", "registrationNo", "address", "createdAt")
SELECT (ARRAY['Teachers','Nurses','Transport Workers','Civil Servants','Farmers','Bankers','Dock Workers','Health Workers'])[1 + i % 8]
       || ' Union ' || i,
       'UN' || lpad(i::text, 3, '0'),
       'REG/' || (2000 + i % 20) || '/' || lpad((i * 7919 % 100000)::text, 5, '0'),
       CASE WHEN i % 5 = 0 THEN NULL ELSE 'P.O. Box ' || (i * 131 % 9000 + 100) || E', Nairobi\nKenya' END,
       timestamp '2019-01-01' + make_interval(days => i * 3)
FROM generate_series(1, 40) AS i;

INSERT INTO "Branch" ("unionId", "name", "location", "createdAt")
SELECT 1 + i % 40, 'Branch ' || i,
       (ARRAY['Nairobi','Mombasa','Kisumu','Nakuru','Eldoret','Thika','Nyeri','Machakos','Meru','Kakamega'])[1 + i % 10],
       timestamp '2019-06-01' + make_interval(days => i * 2)
FROM generate_series(1, 60) AS i;

INSERT INTO "LoanType" ("name", "description", "interestRate", "minAmount", "maxAmount", "maxTermMonths", "requiresGuarantor", "isActive", "createdAt")
SELECT (ARRAY['Emergency','School Fees','Development','Asset Finance','Salary Advance','Top-up','Mortgage','Business','Medical','Agricultural','Car','Holiday'])[i],
       'Loan product #' || i || E' — terms apply; see "Loan Policy" §' || i,
       round((8 + i * 1.25)::numeric, 2), 1000.00 * i, 50000.00 * i * i, 6 * (1 + i % 10),
       i % 3 <> 0, i <> 12, timestamp '2019-01-15' + make_interval(days => i)
FROM generate_series(1, 12) AS i;

INSERT INTO "Setting" ("key", "value", "updatedAt")
SELECT 'setting.' || i,
       jsonb_build_object('enabled', i % 2 = 0, 'threshold', i * 1000.5, 'label', 'Setting number ' || i,
                          'tags', jsonb_build_array('a' || i, 'b' || i), 'nested', jsonb_build_object('level', i)),
       timestamp '2024-01-01' + make_interval(hours => i)
FROM generate_series(1, 30) AS i;

-- People ---------------------------------------------------------------------

INSERT INTO "User" ("id", "email", "firstName", "lastName", "phone", "passwordHash", "role", "isActive", "branchId", "lastLoginAt", "createdAt", "updatedAt")
SELECT 'c' || substr(md5('user' || i), 1, 24),
       'user' || i || '@example.org',
       (ARRAY['Amina','Brian','Cynthia','David','Esther','Felix','Grace','Hassan','Irene','James','Kevin','Lucy','Mercy','Njeri','Otieno','Peter','Quincy','Rose','Samuel','Zoë'])[1 + i % 20],
       (ARRAY['Wanjiru','Odhiambo','Mwangi','Kamau','Achieng','Kiprono','Mutua','Njoroge','Onyango','O''Brien','Chebet','Wekesa','Barasa','Muthoni','Kariuki','Omondi'])[1 + (i / 20) % 16],
       CASE WHEN i % 11 = 0 THEN NULL ELSE '+2547' || lpad((i::bigint * 7919 % 100000000)::text, 8, '0') END,
       '$2b$10$' || substr(md5('pw' || i) || md5('salt' || i), 1, 53),
       (CASE WHEN i <= 5 THEN 'ADMIN' WHEN i <= 200 THEN 'LOAN_OFFICER' WHEN i <= 260 THEN 'ACCOUNTANT'
             WHEN i <= 280 THEN 'AUDITOR' ELSE 'MEMBER' END)::"Role",
       i % 17 <> 0,
       CASE WHEN i % 9 = 0 THEN NULL ELSE 1 + i % 60 END,
       CASE WHEN i % 4 = 0 THEN NULL ELSE timestamp '2024-01-01' + make_interval(secs => (i::bigint * 104729 % 31536000) + (i % 1000) / 1000.0) END,
       timestamp '2020-01-01' + make_interval(secs => i * 3600 + (i % 1000) / 1000.0),
       timestamp '2023-01-01' + make_interval(secs => i * 1200 + (i % 997) / 1000.0)
FROM generate_series(1, 25000) AS i;

INSERT INTO "UnionMember" ("userId", "unionId", "memberNumber", "employer", "status", "sharesBalance", "monthlyContribution", "joinedAt", "createdAt", "updatedAt")
SELECT 'c' || substr(md5('user' || (i + 300)), 1, 24),
       1 + i % 40,
       'M-' || lpad(i::text, 6, '0'),
       CASE WHEN i % 7 = 0 THEN NULL ELSE (ARRAY['Ministry of Education','County Government','Kenya Ports Authority','KenGen','Safaricom PLC','Teachers Service Commission'])[1 + i % 6] END,
       (CASE WHEN i % 29 = 0 THEN 'LEFT' WHEN i % 13 = 0 THEN 'SUSPENDED' ELSE 'ACTIVE' END)::"MemberStatus",
       round((i::bigint * 7919 % 2500000) / 100.0, 2),
       round((500 + i % 50 * 100)::numeric, 2),
       timestamp '2015-01-01' + make_interval(secs => i * 5400),
       timestamp '2020-01-01' + make_interval(secs => i * 3600 + (i % 1000) / 1000.0),
       timestamp '2023-06-01' + make_interval(secs => i * 600 + (i % 991) / 1000.0)
FROM generate_series(1, 22000) AS i;

-- Loans ----------------------------------------------------------------------

INSERT INTO "Loan" ("id", "loanNumber", "userId", "loanTypeId", "principalAmount", "interestRate", "termMonths", "totalPayable", "outstandingBalance", "status", "purpose", "approvedById", "approvedAt", "disbursedAt", "createdAt", "updatedAt")
SELECT md5('loan' || i)::uuid,
       'LN-' || lpad(i::text, 7, '0'),
       'c' || substr(md5('user' || (1 + i::bigint * 7 % 25000)), 1, 24),
       1 + i % 12,
       p.amount, p.rate, p.term,
       round(p.amount * (1 + p.rate / 100 * p.term / 12), 2),
       round(p.amount * (1 + p.rate / 100 * p.term / 12) * ((i % 10) / 10.0), 2),
       (ARRAY['PENDING','APPROVED','REJECTED','DISBURSED','ACTIVE','ACTIVE','ACTIVE','CLOSED','CLOSED','DEFAULTED'])[1 + i % 10]::"LoanStatus",
       CASE i % 8
           WHEN 0 THEN NULL
           WHEN 1 THEN 'School fees for ' || (1 + i % 4) || ' children, term ' || (1 + i % 3)
           WHEN 2 THEN E'Purchase of dairy cows\nand feed for 6 months'
           WHEN 3 THEN 'Medical bill — "urgent" (hospital ref ' || i || ')'
           WHEN 4 THEN E'Business stock:\tgroceries, airtime'
           WHEN 5 THEN 'Home improvement: roof, water tank & solar panels; contractor C:\\builders\\' || i
           WHEN 6 THEN 'Refinance of loan LN-' || lpad((i / 2)::text, 7, '0')
           ELSE 'Matatu repairs 🚐 and insurance for vehicle KCB ' || (100 + i % 900) || 'X'
       END,
       CASE WHEN i % 10 IN (0, 2) THEN NULL ELSE 'c' || substr(md5('user' || (6 + i % 195)), 1, 24) END,
       CASE WHEN i % 10 IN (0, 2) THEN NULL ELSE timestamp '2021-01-01' + make_interval(secs => i * 1800 + 86400 + (i % 1000) / 1000.0) END,
       CASE WHEN i % 10 IN (0, 1, 2) THEN NULL ELSE timestamp '2021-01-01' + make_interval(secs => i * 1800 + 172800 + (i % 999) / 1000.0) END,
       timestamp '2021-01-01' + make_interval(secs => i * 1800 + (i % 1000) / 1000.0),
       timestamp '2024-01-01' + make_interval(secs => i * 600 + (i % 977) / 1000.0)
FROM generate_series(1, 50000) AS i,
LATERAL (SELECT round((5000 + i::bigint * 7919 % 995000)::numeric + (i % 100) / 100.0, 2) AS amount,
                round((8 + (1 + i % 12) * 1.25)::numeric, 2) AS rate,
                6 * (1 + i % 8) AS term) AS p;

INSERT INTO "Guarantor" ("id", "loanId", "memberId", "guaranteedAmount", "accepted", "respondedAt", "createdAt")
SELECT md5('guarantor' || i)::uuid,
       md5('loan' || (1 + (i - 1) % 50000))::uuid,
       1 + i::bigint * 31 % 22000,
       round((1000 + i::bigint * 104729 % 200000)::numeric + (i % 100) / 100.0, 2),
       CASE WHEN i % 6 = 0 THEN NULL ELSE i % 9 <> 0 END,
       CASE WHEN i % 6 = 0 THEN NULL ELSE timestamp '2021-01-02' + make_interval(secs => i * 1900 + (i % 1000) / 1000.0) END,
       timestamp '2021-01-01' + make_interval(secs => i * 1900 + (i % 1000) / 1000.0)
FROM generate_series(1, 45000) AS i;

INSERT INTO "LoanStatusHistory" ("loanId", "fromStatus", "toStatus", "changedById", "note", "changedAt")
SELECT md5('loan' || (1 + (i - 1) % 50000))::uuid,
       CASE WHEN i <= 50000 THEN NULL ELSE (ARRAY['PENDING','APPROVED','DISBURSED','ACTIVE'])[1 + (i / 50000) % 4]::"LoanStatus" END,
       (ARRAY['PENDING','APPROVED','REJECTED','DISBURSED','ACTIVE','CLOSED','DEFAULTED'])[1 + (i + i / 50000) % 7]::"LoanStatus",
       CASE WHEN i % 15 = 0 THEN NULL ELSE 'c' || substr(md5('user' || (6 + i % 195)), 1, 24) END,
       CASE WHEN i % 3 = 0 THEN NULL ELSE 'Status changed after review #' || i || CASE WHEN i % 7 = 0 THEN E' (see committee minutes,\n item ' || (i % 40) || ')' ELSE '' END END,
       timestamp '2021-01-01' + make_interval(secs => i * 900 + (i % 1000) / 1000.0)
FROM generate_series(1, 100000) AS i;

-- 6 installments per loan.
INSERT INTO "RepaymentScheduleItem" ("id", "loanId", "installmentNumber", "dueDate", "principalDue", "interestDue", "totalDue", "amountPaid", "isPaid", "paidAt", "createdAt")
SELECT md5('rsi' || i)::uuid,
       md5('loan' || (1 + (i - 1) / 6))::uuid,
       1 + (i - 1) % 6,
       timestamp '2021-02-01' + make_interval(months => (1 + (i - 1) % 6), secs => ((i - 1) / 6) * 1800),
       s.principal, s.interest, s.principal + s.interest,
       CASE WHEN (i - 1) % 6 < 1 + (i / 6) % 6 THEN s.principal + s.interest ELSE 0 END,
       (i - 1) % 6 < 1 + (i / 6) % 6,
       CASE WHEN (i - 1) % 6 < 1 + (i / 6) % 6 THEN timestamp '2021-02-01' + make_interval(months => (1 + (i - 1) % 6), secs => ((i - 1) / 6) * 1800 - 3600 * (i % 48) + (i % 1000) / 1000.0) END,
       timestamp '2021-01-01' + make_interval(secs => ((i - 1) / 6) * 1800 + (i % 1000) / 1000.0)
FROM generate_series(1, 300000) AS i,
LATERAL (SELECT round((600 + i::bigint * 7919 % 125000)::numeric + (i % 100) / 100.0, 2) AS principal,
                round((50 + i::bigint * 104729 % 15000)::numeric + (i % 97) / 100.0, 2) AS interest) AS s;

INSERT INTO "Repayment" ("id", "loanId", "scheduleItemId", "amount", "method", "reference", "receivedById", "notes", "paidAt", "createdAt")
SELECT md5('repayment' || i)::uuid,
       md5('loan' || (1 + (i - 1) % 50000))::uuid,
       CASE WHEN i % 10 = 0 THEN NULL ELSE md5('rsi' || (6 * ((i - 1) % 50000) + 1 + (i - 1) / 50000))::uuid END,
       round((500 + i::bigint * 7919 % 140000)::numeric + (i % 100) / 100.0, 2),
       (ARRAY['CASH','BANK_TRANSFER','MOBILE_MONEY','MOBILE_MONEY','MOBILE_MONEY','PAYROLL_DEDUCTION','CHEQUE'])[1 + i % 7]::"PaymentMethod",
       (ARRAY['MPESA-','BNK-','CSH-','PAY-','CHQ-'])[1 + i % 5] || upper(substr(md5('ref' || i), 1, 10)),
       CASE WHEN i % 8 = 0 THEN NULL ELSE 'c' || substr(md5('user' || (6 + i % 255)), 1, 24) END,
       CASE WHEN i % 4 <> 0 THEN NULL WHEN i % 12 = 0 THEN E'Partial payment;\tbalance carried forward' ELSE 'Paid at branch counter ' || (1 + i % 60) END,
       timestamp '2021-03-01' + make_interval(secs => i * 450 + (i % 1000) / 1000.0),
       timestamp '2021-03-01' + make_interval(secs => i * 450 + 5 + (i % 999) / 1000.0)
FROM generate_series(1, 200000) AS i;

INSERT INTO "LoanDocument" ("id", "loanId", "type", "fileName", "mimeType", "sizeBytes", "url", "uploadedById", "uploadedAt")
SELECT md5('doc' || i)::uuid,
       md5('loan' || (1 + (i - 1) % 50000))::uuid,
       (ARRAY['NATIONAL_ID','PAYSLIP','LOAN_AGREEMENT','COLLATERAL','BANK_STATEMENT','OTHER'])[1 + i % 6]::"DocumentType",
       (ARRAY['id_front','payslip_march','agreement_signed','logbook','statement_q1','other'])[1 + i % 6] || '_' || i || (ARRAY['.pdf','.jpg','.png'])[1 + i % 3],
       (ARRAY['application/pdf','image/jpeg','image/png'])[1 + i % 3],
       20000 + i * 37 % 4000000,
       'https://res.cloudinary.com/loans-demo/image/upload/v16' || lpad((i * 7919 % 100000000)::text, 8, '0')
           || '/loan-documents/' || md5('doc' || i) || (ARRAY['.pdf','.jpg','.png'])[1 + i % 3],
       CASE WHEN i % 5 = 0 THEN NULL ELSE 'c' || substr(md5('user' || (1 + i % 25000)), 1, 24) END,
       timestamp '2021-01-01' + make_interval(secs => i * 2200 + (i % 1000) / 1000.0)
FROM generate_series(1, 40000) AS i;

-- Activity ---------------------------------------------------------------------

INSERT INTO "AuditLog" ("userId", "action", "entity", "entityId", "details", "ipAddress", "userAgent", "createdAt")
SELECT CASE WHEN i % 20 = 0 THEN NULL ELSE 'c' || substr(md5('user' || (1 + i::bigint * 13 % 25000)), 1, 24) END,
       (ARRAY['LOGIN','LOAN_CREATED','LOAN_APPROVED','LOAN_DISBURSED','REPAYMENT_RECORDED','USER_UPDATED','DOCUMENT_UPLOADED','SETTINGS_CHANGED'])[1 + i % 8],
       (ARRAY['User','Loan','Loan','Loan','Repayment','User','LoanDocument','Setting'])[1 + i % 8],
       CASE WHEN i % 8 = 0 THEN NULL ELSE md5('loan' || (1 + i % 50000))::uuid::text END,
       CASE WHEN i % 10 = 0 THEN NULL ELSE jsonb_build_object(
           'method', (ARRAY['POST','PATCH','PUT','DELETE'])[1 + i % 4],
           'changes', jsonb_build_object('status', jsonb_build_array('PENDING', 'APPROVED'),
                                         'amount', (1000 + i % 90000) + (i % 100) / 100.0,
                                         'note', CASE WHEN i % 3 = 0 THEN E'approved by "committee"\nline 2' ELSE 'ok' END),
           'durationMs', i % 1500,
           'success', i % 23 <> 0) END,
       CASE WHEN i % 6 = 0 THEN '2001:db8::' || to_hex(i % 65536) ELSE '10.' || (i % 256) || '.' || (i / 256 % 256) || '.' || (1 + i % 254) END,
       (ARRAY['Mozilla/5.0 (Windows NT 10.0) Chrome/120.0', 'Mozilla/5.0 (iPhone; iOS 17_2) Mobile/15E148',
              'okhttp/4.12.0', NULL, 'Mozilla/5.0 (X11; Linux x86_64) Firefox/121.0'])[1 + i % 5],
       timestamp '2021-01-01' + make_interval(secs => i * 600 + (i % 1000) / 1000.0)
FROM generate_series(1, 130000) AS i;

INSERT INTO "Notification" ("id", "userId", "title", "message", "isRead", "readAt", "createdAt")
SELECT md5('notification' || i)::uuid,
       'c' || substr(md5('user' || (1 + i::bigint * 17 % 25000)), 1, 24),
       (ARRAY['Loan approved','Repayment received','Installment due','Guarantor request','Loan disbursed'])[1 + i % 5],
       (ARRAY['Your loan LN-' || lpad((1 + i % 50000)::text, 7, '0') || ' has been approved.',
              'We received KES ' || (500 + i % 9000) || '.00. Thank you!',
              E'Your installment is due in 3 days.\nPay via M-PESA paybill 123456.',
              'You were asked to guarantee a loan of KES ' || (1000 + i % 50000) || ' — please respond.',
              'Funds have been sent to your account ending ' || lpad((i % 10000)::text, 4, '0') || '.'])[1 + i % 5],
       i % 3 <> 0,
       CASE WHEN i % 3 = 0 THEN NULL ELSE timestamp '2021-01-01' + make_interval(secs => i * 1300 + 7200 + (i % 1000) / 1000.0) END,
       timestamp '2021-01-01' + make_interval(secs => i * 1300 + (i % 1000) / 1000.0)
FROM generate_series(1, 70000) AS i;

-- Secondary indexes an app like this would have ----------------------------------

CREATE UNIQUE INDEX "User_email_key" ON "User"("email");
CREATE UNIQUE INDEX "UnionMember_userId_key" ON "UnionMember"("userId");
CREATE UNIQUE INDEX "UnionMember_memberNumber_key" ON "UnionMember"("memberNumber");
CREATE UNIQUE INDEX "Loan_loanNumber_key" ON "Loan"("loanNumber");
CREATE INDEX "Loan_userId_idx" ON "Loan"("userId");
CREATE INDEX "Loan_status_idx" ON "Loan"("status");
CREATE INDEX "Guarantor_loanId_idx" ON "Guarantor"("loanId");
CREATE INDEX "LoanStatusHistory_loanId_idx" ON "LoanStatusHistory"("loanId");
CREATE INDEX "RepaymentScheduleItem_loanId_idx" ON "RepaymentScheduleItem"("loanId");
CREATE INDEX "Repayment_loanId_idx" ON "Repayment"("loanId");
CREATE UNIQUE INDEX "Repayment_reference_key" ON "Repayment"("reference");
CREATE INDEX "LoanDocument_loanId_idx" ON "LoanDocument"("loanId");
CREATE INDEX "AuditLog_createdAt_idx" ON "AuditLog"("createdAt");
CREATE INDEX "AuditLog_userId_idx" ON "AuditLog"("userId");
CREATE INDEX "Notification_userId_isRead_idx" ON "Notification"("userId", "isRead");
